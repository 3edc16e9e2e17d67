//! A small certificate authority for development and tests (`ballast-dev up --tls-dir`):
//! a CA, and certificates it signs for servers and clients. Never for production: the CA
//! key lives only in memory and is gone when the process ends.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A CA that writes what it issues into one directory.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate (PEM), for `tls.client_ca_file` and clients' `--tls-ca`.
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// How a certificate names its holder.
#[derive(Debug, Clone, Copy)]
pub enum Name<'a> {
    Dns(&'a str),
    Ip(std::net::IpAddr),
    Uri(&'a str),
}

impl Authority {
    /// A new CA named `common_name`, its certificate written to `dir/ca.pem`.
    pub fn create(dir: &Path, common_name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("signing the CA")?;
        let ca_file = dir.join("ca.pem");
        write(&ca_file, &cert.pem())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            ca_file,
        })
    }

    /// Issues `stem.pem` and `stem-key.pem` for a holder named `common_name` and `names`,
    /// good for servers and clients.
    pub fn issue(
        &self,
        stem: &str,
        common_name: &str,
        names: &[Name<'_>],
    ) -> anyhow::Result<Issued> {
        self.issue_with(stem, common_name, names, |_| {})
    }

    /// Like [`Authority::issue`], but already expired (for tests of the refusal).
    pub fn issue_expired(&self, stem: &str, common_name: &str) -> anyhow::Result<Issued> {
        self.issue_with(stem, common_name, &[], |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        stem: &str,
        common_name: &str,
        names: &[Name<'_>],
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> anyhow::Result<Issued> {
        let key = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for n in names {
            params.subject_alt_names.push(match n {
                Name::Dns(d) => SanType::DnsName((*d).try_into().context("a DNS name")?),
                Name::Ip(ip) => SanType::IpAddress(*ip),
                Name::Uri(u) => SanType::URI((*u).try_into().context("a URI")?),
            });
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        tweak(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing {stem}"))?;
        let issued = Issued {
            cert_file: self.dir.join(format!("{stem}.pem")),
            key_file: self.dir.join(format!("{stem}-key.pem")),
        };
        write(&issued.cert_file, &cert.pem())?;
        write(&issued.key_file, &key.serialize_pem())?;
        Ok(issued)
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_come_from_uri_then_dns_then_cn() {
        let dir = std::env::temp_dir().join(format!("ballast-pki-{}", std::process::id()));
        let ca = Authority::create(&dir, "test CA").unwrap();
        let der = |i: &Issued| {
            rustls::pki_types::CertificateDer::from_pem_file(&i.cert_file)
                .unwrap()
                .to_vec()
        };
        use rustls::pki_types::pem::PemObject;
        let uri = ca
            .issue(
                "uri",
                "cn-ignored",
                &[Name::Dns("svc.local"), Name::Uri("spiffe://ballast/ops")],
            )
            .unwrap();
        assert_eq!(
            crate::principal_of(&der(&uri)).as_deref(),
            Some("spiffe://ballast/ops")
        );
        let dns = ca
            .issue("dns", "cn-ignored", &[Name::Dns("gw.az-a.local")])
            .unwrap();
        assert_eq!(
            crate::principal_of(&der(&dns)).as_deref(),
            Some("gw.az-a.local")
        );
        let cn = ca.issue("cn", "orders-service", &[]).unwrap();
        assert_eq!(
            crate::principal_of(&der(&cn)).as_deref(),
            Some("orders-service")
        );
        assert_eq!(crate::principal_of(b"not a certificate"), None);
        std::fs::remove_dir_all(&dir).ok();
    }
}
