//! Replays every committed fuzz corpus file through its target (see
//! `integration-tests/fuzz`), on stable Rust. A target without a corpus fails the test.

use ballast_dev::fuzz::TARGETS;
use std::path::Path;

#[test]
fn every_corpus_file_replays_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let mut replayed = 0;
        for dir in ["corpus", "artifacts"] {
            let dir = root.join(dir).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a readable corpus directory").path();
                let data = std::fs::read(&path).expect("a readable corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "{name}: no corpus under {}", root.display());
        eprintln!("{name}: {replayed} inputs replayed");
    }
}
