//! P-256 signing keys (APNs `.p8` keys, VAPID keys): PEM in PKCS#8 or the older SEC1
//! (`EC PRIVATE KEY`) form, turned into what `jsonwebtoken` signs ES256 with.

use jsonwebtoken::EncodingKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

/// Reads a P-256 private key from PEM text (PKCS#8 or SEC1). Text around the PEM block
/// (RFC 7468's explanatory text, like the comment `herald vapid` writes) is ignored.
pub fn p256_from_pem(text: &str) -> Result<p256::SecretKey, String> {
    let pem = text
        .find("-----BEGIN ")
        .and_then(|start| {
            let rest = &text[start..];
            let end = rest.find("-----END ")?;
            let close = rest[end + 9..].find("-----")? + end + 9 + 5;
            Some(&rest[..close])
        })
        .ok_or_else(|| "no PEM block (-----BEGIN …-----) in it".to_string())?;
    let pem = format!("{pem}\n");
    p256::SecretKey::from_pkcs8_pem(&pem)
        .or_else(|_| p256::SecretKey::from_sec1_pem(&pem))
        .map_err(|_| "not a P-256 private key in PEM (PKCS#8 or SEC1)".to_string())
}

/// The key `jsonwebtoken` signs ES256 with.
pub fn es256(key: &p256::SecretKey) -> Result<EncodingKey, String> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| format!("cannot use the key: {e}"))
}

/// Reads a key file.
pub fn read_p256(path: &std::path::Path) -> Result<p256::SecretKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    p256_from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::SecretKey;

    #[test]
    fn reads_pkcs8_and_sec1() {
        let key: SecretKey<p256::NistP256> =
            SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let sec1 = key.to_sec1_pem(LineEnding::LF).unwrap();
        assert_eq!(p256_from_pem(&pkcs8).unwrap(), key);
        assert_eq!(p256_from_pem(&sec1).unwrap(), key);
        assert!(
            p256_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        let commented = format!("# a comment\n{}trailing\n", pkcs8.as_str());
        assert_eq!(p256_from_pem(&commented).unwrap(), key);
        assert!(
            p256_from_pem("nothing")
                .unwrap_err()
                .contains("no PEM block")
        );
        assert!(es256(&key).is_ok());
    }
}
