//! Trusting a mail server's certificate by pinning it, for STARTTLS to SMTP
//! (and to IMAP: both take [`client_config`]).
//!
//! Why not a root store: Proton Mail Bridge's certificate is self-signed and
//! marked `CA:TRUE` (its `internal/certs/tls.go` sets `IsCA: true`). webpki
//! refuses a CA certificate as an end-entity certificate even when that very
//! certificate is the trusted root (`CaUsedAsEndEntity`), so adding Bridge's
//! exported PEM as a root can never work under rustls. A pin says exactly
//! what the operator means, "this certificate and no other": the server's
//! end-entity certificate must hash (SHA-256 of its DER) to a pinned value,
//! and the handshake signature is still verified with that certificate's key,
//! so only the holder of its private key can answer. Chains, names and dates
//! are not checked: the operator chose this very certificate, and it stays
//! trusted until the pin is changed.
//!
//! Without a pin the platform's roots are used, as for any public server.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// What a TLS client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Exactly these end-entity certificates (SHA-256 of the DER).
    Pinned {
        /// The pinned fingerprints.
        pins: Vec<[u8; 32]>,
        /// Where they came from, for messages: a flag and its value.
        source: String,
    },
    /// The platform's root certificates (a public server).
    Platform,
}

/// A fingerprint or a PEM file that could not be read as one.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// Not 64 hex digits.
    #[error(
        "{0:?} is not a SHA-256 fingerprint: expected 64 hex digits (colons allowed), as `openssl x509 -noout -fingerprint -sha256` prints"
    )]
    Fingerprint(String),
    /// No certificate in the PEM text.
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(String),
    /// A PEM section could not be decoded.
    #[error("{what} is not valid PEM: {error}")]
    Pem {
        /// The file.
        what: String,
        /// Why.
        error: String,
    },
}

/// The SHA-256 fingerprint of a DER certificate, as lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Reads a fingerprint written as hex, with or without colons or spaces, in
/// any case (`AB:CD:…`, as openssl prints it, or `abcd…`).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], PinError> {
    let digits: String = text
        .trim()
        .trim_start_matches("sha256 Fingerprint=")
        .trim_start_matches("SHA256 Fingerprint=")
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).map_err(|_| PinError::Fingerprint(text.to_owned()))?;
    Ok(out)
}

/// The fingerprints of every certificate in a PEM text (`what` names it in
/// errors).
pub fn pins_from_pem(pem: &[u8], what: &str) -> Result<Vec<[u8; 32]>, PinError> {
    let mut pins = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| PinError::Pem {
            what: what.to_owned(),
            error: e.to_string(),
        })?;
        pins.push(Sha256::digest(cert.as_ref()).into());
    }
    if pins.is_empty() {
        return Err(PinError::NoCertificate(what.to_owned()));
    }
    Ok(pins)
}

/// The server presented a certificate other than the pinned one(s).
#[derive(Debug)]
pub struct PinMismatch {
    /// The presented certificate's fingerprint.
    pub presented: String,
    /// The pinned fingerprints.
    pub pinned: Vec<String>,
    /// Where the pins came from.
    pub source: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate has SHA-256 fingerprint {}, but {} pins {}: this is not the pinned certificate (if the server's certificate changed on purpose, pin the new one)",
            self.presented,
            self.source,
            self.pinned.join(", ")
        )
    }
}

impl std::error::Error for PinMismatch {}

/// The verifier behind [`Trust::Pinned`].
#[derive(Debug)]
struct PinnedVerifier {
    pins: Vec<[u8; 32]>,
    source: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // Fingerprints are public: no constant-time comparison is needed.
        if self.pins.contains(&presented) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(PinMismatch {
                presented: hex::encode(presented),
                pinned: self.pins.iter().map(hex::encode).collect(),
                source: self.source.clone(),
            })),
        )))
    }

    // The handshake is still proven with the pinned certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The ring provider: the one the whole workspace uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client configuration that trusts what `trust` says.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Pinned { pins, source } => Arc::new(PinnedVerifier {
            pins: pins.clone(),
            source: source.clone(),
            algorithms: provider.signature_verification_algorithms,
        }),
        Trust::Platform => Arc::new(rustls_platform_verifier::Verifier::new(provider)?),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A failed TLS handshake in words: a pin mismatch as itself (naming both
/// fingerprints), anything else as rustls says it.
pub fn explain(e: &std::io::Error) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) =
        rustls_error
        && let Some(m) = inner.downcast_ref::<PinMismatch>()
    {
        return m.to_string();
    }
    match rustls_error {
        Some(r) => format!("TLS handshake failed: {r}"),
        None => format!("TLS handshake failed: {e}"),
    }
}

impl Trust {
    /// In words, for `check`: what a handshake will accept.
    pub fn describe(&self) -> String {
        match self {
            Self::Pinned { pins, source } => format!(
                "exactly the certificate(s) with SHA-256 {} ({source})",
                pins.iter().map(hex::encode).collect::<Vec<_>>().join(", ")
            ),
            Self::Platform => {
                "certificates that chain to this machine's root certificates and name the host"
                    .to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_usual_spellings() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&format!("SHA256 Fingerprint={colons}\n")).unwrap(),
            [0xab; 32]
        );
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_pem_without_a_certificate_is_refused() {
        assert!(matches!(
            pins_from_pem(b"hello", "x.pem"),
            Err(PinError::NoCertificate(_))
        ));
    }
}
