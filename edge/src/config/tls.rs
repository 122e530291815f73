//! The TLS keys of the file: the webhook listener's certificate (`tls_cert`, `tls_key`)
//! and the settings of `https://` contacts-svc addresses (`contacts_ca`, `contacts_cert`,
//! `contacts_key`). Every file is read and checked here, so that a problem is reported
//! with its key; no key's text is ever quoted.

use std::path::Path;

use super::FileConfig;
use crate::problem::Problems;
use crate::secret::Resolver;

/// The TLS settings of `https://` contacts-svc addresses: `contacts_ca` (the authority
/// to trust, PEM text or `file:`) is required with them, `contacts_cert` and
/// `contacts_key` (the edge's certificate for mutual TLS) go together. Tried once here,
/// so that a certificate that cannot be read is reported with its key.
pub(super) fn contacts(
    file: &FileConfig,
    https: bool,
    resolver: &Resolver<'_>,
    problems: &mut Problems,
) -> Option<crate::contacts::ContactsTls> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let given =
        file.contacts_ca.is_some() || file.contacts_cert.is_some() || file.contacts_key.is_some();
    if !https {
        if given {
            problems.push(
                "contacts_ca",
                "TLS settings need an https:// address in contacts_url",
            );
        }
        return None;
    }
    let Some(ca) = &file.contacts_ca else {
        problems.push("contacts_ca", "is required with an https:// contacts_url");
        return None;
    };
    match (&file.contacts_cert, &file.contacts_key) {
        (Some(_), None) => problems.push("contacts_key", "is required with contacts_cert"),
        (None, Some(_)) => problems.push("contacts_cert", "is required with contacts_key"),
        _ => {}
    }
    let ca = problems.check("contacts_ca", resolver.text(ca))?;
    pem_certificates("contacts_ca", &ca, problems)?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    match (&file.contacts_cert, &file.contacts_key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            let cert = problems.check("contacts_cert", resolver.text(cert))?;
            pem_certificates("contacts_cert", &cert, problems)?;
            let key = problems.check("contacts_key", resolver.secret(key))?;
            {
                use rustls_pki_types::{PrivateKeyDer, pem::PemObject as _};
                if PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).is_err() {
                    // The key's text is never quoted: it is a secret.
                    problems.push("contacts_key", "holds no PEM private key");
                    return None;
                }
            }
            tls = tls.identity(Identity::from_pem(cert, key.expose()));
        }
        // One without the other: reported above.
        (Some(_), None) | (None, Some(_)) => return None,
    }
    // Certificates are read when a connector is made: make one now.
    let tried = Endpoint::from_static("https://localhost").tls_config(tls.clone());
    if let Err(e) = tried {
        let source = std::error::Error::source(&e).map(ToString::to_string);
        problems.push(
            "contacts_ca",
            format!(
                "the TLS settings cannot be used: {}",
                source.unwrap_or_else(|| e.to_string())
            ),
        );
        return None;
    }
    Some(crate::contacts::ContactsTls(tls))
}

/// TLS on the webhook listener: `tls_cert` and `tls_key` (PEM files, relative to the
/// configuration's directory), read now so that a problem is reported with its key, and
/// again whenever they change.
pub(super) fn listener(
    file: &FileConfig,
    base: &Path,
    problems: &mut Problems,
) -> Option<hookline_tls::ServerTls> {
    let (cert, key) = match (&file.tls_cert, &file.tls_key) {
        (None, None) => return None,
        (Some(cert), Some(key)) => (base.join(cert), base.join(key)),
        (Some(_), None) => {
            problems.push("tls_key", "is required with tls_cert");
            return None;
        }
        (None, Some(_)) => {
            problems.push("tls_cert", "is required with tls_key");
            return None;
        }
    };
    let files = hookline_tls::TlsFiles {
        cert,
        key,
        client_ca: None,
    };
    // HTTP/2 where the sender offers it, HTTP/1.1 otherwise.
    match hookline_tls::ServerTls::load(files, &[b"h2", b"http/1.1"]) {
        Ok(tls) => Some(tls),
        Err(e) => {
            problems.push("tls_cert", e.to_string());
            None
        }
    }
}

/// PEM text holding at least one certificate, as `key` names it.
fn pem_certificates(key: &str, pem: &str, problems: &mut Problems) -> Option<()> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Some(()),
        Ok(_) => {
            problems.push(key, "holds no PEM certificate");
            None
        }
        Err(e) => {
            problems.push(key, format!("is not PEM: {e}"));
            None
        }
    }
}
