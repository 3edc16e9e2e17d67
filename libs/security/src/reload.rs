//! Files watched for change by content (Kubernetes swaps a Secret's files through a
//! symlink, so modification times alone can mislead).

use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug)]
pub(crate) struct Watched {
    files: Vec<PathBuf>,
    seen: Mutex<Vec<Option<Vec<u8>>>>,
}

impl Watched {
    pub fn new(files: Vec<PathBuf>) -> Self {
        let seen = files.iter().map(|f| std::fs::read(f).ok()).collect();
        Self {
            files,
            seen: Mutex::new(seen),
        }
    }

    /// Whether any file's content differs from the last call (or from the start).
    pub fn changed(&self) -> bool {
        let now: Vec<Option<Vec<u8>>> = self.files.iter().map(|f| std::fs::read(f).ok()).collect();
        let mut seen = self.seen.lock().expect("watched files lock");
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_once() {
        let dir = std::env::temp_dir().join(format!("ballast-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a");
        std::fs::write(&f, "1").unwrap();
        let w = Watched::new(vec![f.clone()]);
        assert!(!w.changed());
        std::fs::write(&f, "2").unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        std::fs::remove_dir_all(&dir).ok();
    }
}
