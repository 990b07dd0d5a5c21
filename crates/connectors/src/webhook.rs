//! Signed JSON webhooks, following the Standard Webhooks scheme used by Svix:
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>`
//! where the signature is HMAC-SHA256 over `"{id}.{timestamp}.{body}"`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::{Delivery, Outbound, classify, refused, transport_failure};

/// Prefix of webhook signing secrets, as in Svix.
pub const SECRET_PREFIX: &str = "whsec_";

/// Signs `body` for delivery `id` at `timestamp` (Unix seconds).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = STANDARD
        .decode(key)
        .unwrap_or_else(|_| key.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Posts a signed JSON body. `id` stays the same across retries, so the
/// receiver can use it to drop duplicates.
pub async fn post(
    out: &Outbound,
    url: &str,
    secret: &str,
    id: &str,
    body: &serde_json::Value,
) -> Delivery {
    let body = body.to_string();
    let ts = chrono::Utc::now().timestamp();
    let signature = sign(secret, id, ts, body.as_bytes());
    let req = match out.post(url) {
        Ok(req) => req,
        Err(e) => return refused(&e),
    };
    let req = req
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body);
    match req.send().await {
        Ok(resp) => classify(out, resp).await,
        Err(e) => transport_failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference tests.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, ts, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
