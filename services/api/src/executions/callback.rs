//! An execution's callback: where its result is POSTed when it ends, the rule a callback URL
//! keeps (no loopback or private addresses unless allowed), and how deliveries are signed with
//! the user's secret.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use sha2::Sha256;

use crate::auth::{new_secret, WEBHOOK_SECRET_PREFIX};
use crate::entity::user;

/// Webhook states of an execution with a callback.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "voidrunner-signature";

/// What is wrong with a callback URL, said so that the client can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlProblem(pub String);

/// Checks a callback URL: http(s), a host, and (unless allowed) no loopback or private address.
pub fn check_url(url: Option<&str>, allow_private: bool) -> Result<Option<String>, UrlProblem> {
    // The document's pattern ends in `$`, which Python's `re` (and so Python clients and
    // schemathesis) also match before a final newline; a URL parser drops newlines anyway
    // (WHATWG URL), so such a URL is taken without it.
    let url = url.map(|url| url.strip_suffix('\n').unwrap_or(url));
    let Some(url) = url.filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    let invalid = |problem: &str| UrlProblem(problem.to_owned());
    crate::rules::CALLBACK_URL.check(url).map_err(UrlProblem)?;
    let parsed =
        reqwest::Url::parse(url).map_err(|_| invalid("must be an absolute http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("must use http or https"));
    }
    let Some(host) = parsed.host_str() else {
        return Err(invalid("must name a host"));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if !allow_private && is_internal_host(host) {
        return Err(invalid(
            "points at a loopback or private address, which this deployment does not call (VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE)",
        ));
    }
    Ok(Some(parsed.to_string()))
}

fn is_internal_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(is_internal_ip)
}

fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal_ip(IpAddr::V4(v4)))
        }
    }
}

/// The signature of `body` at `timestamp` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The user's webhook secret, made on first use for users from before webhooks.
pub async fn secret_of(db: &DatabaseConnection, user: &user::Model) -> Result<String, DbErr> {
    if let Some(secret) = &user.webhook_secret {
        return Ok(secret.clone());
    }
    let secret = new_secret(WEBHOOK_SECRET_PREFIX);
    user::Entity::update_many()
        .col_expr(user::Column::WebhookSecret, Expr::value(secret.clone()))
        .filter(user::Column::Id.eq(user.id))
        .filter(user::Column::WebhookSecret.is_null())
        .exec(db)
        .await?;
    let stored = user::Entity::find_by_id(user.id)
        .one(db)
        .await?
        .and_then(|user| user.webhook_secret)
        .unwrap_or(secret);
    Ok(stored)
}

/// Whether the URL's host resolves to an internal address (checked at delivery time too, since
/// a name can point anywhere).
pub async fn resolves_internal(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return true;
    };
    let Some(host) = parsed.host_str() else {
        return true;
    };
    if is_internal_host(host) {
        return true;
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host.to_owned();
    let resolved = tokio::net::lookup_host((host.as_str(), port)).await;
    match resolved {
        Ok(addresses) => addresses
            .collect::<Vec<_>>()
            .into_iter()
            .any(|address| is_internal_ip(address.ip())),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_the_timestamp_and_the_body() {
        let signature = sign("vrw_secret", 1_700_000_000, b"{\"a\":1}");
        assert!(signature.starts_with("t=1700000000,v1="));
        assert_eq!(signature, sign("vrw_secret", 1_700_000_000, b"{\"a\":1}"));
        assert_ne!(signature, sign("vrw_secret", 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(signature, sign("vrw_secret", 1_700_000_000, b"{\"a\":2}"));
        assert_ne!(signature, sign("vrw_other", 1_700_000_000, b"{\"a\":1}"));
    }

    #[test]
    fn a_final_newline_is_read_as_python_reads_the_pattern_and_dropped() {
        let url = check_url(Some("https://hooks.example.com:65451/x\n"), false);
        assert_eq!(
            url.expect("taken").as_deref(),
            Some("https://hooks.example.com:65451/x")
        );
        assert_eq!(check_url(Some("\n"), false).expect("taken"), None);
        assert!(check_url(Some("https://hooks.example.com/x\n\n"), false).is_err());
        assert!(check_url(Some("https://hooks.example.com:65536/"), false).is_err());
    }

    #[test]
    fn internal_hosts_are_recognised() {
        for host in [
            "localhost",
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "[::1]",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(is_internal_host(host), "{host}");
        }
        for host in ["example.com", "8.8.8.8", "[2001:db8::1]"] {
            assert!(!is_internal_host(host), "{host}");
        }
    }
}
