//! Steps the package tests share: the catalogue, installing and
//! uninstalling through the admin API.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::TestApp;

/// The catalogue's entry for `slug` (`GET /admin/v1/packages`).
pub async fn catalogue_entry(app: &TestApp, slug: &str) -> Value {
    let (s, v) = app.get("/admin/v1/packages").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["slug"] == slug)
        .unwrap_or_else(|| panic!("no {slug} in the catalogue: {v}"))
        .clone()
}

/// `POST /admin/v1/installations {package, config}`.
pub async fn install(app: &TestApp, package: &str, config: Value) -> (StatusCode, Value) {
    app.post(
        "/admin/v1/installations",
        json!({ "package": package, "config": config }),
    )
    .await
}

/// `DELETE /admin/v1/installations/{package}`.
pub async fn uninstall(app: &TestApp, package: &str) -> (StatusCode, Value) {
    app.request_as(
        &app.tenant.token,
        reqwest::Method::DELETE,
        &format!("/admin/v1/installations/{package}"),
        None,
    )
    .await
}

/// Runs `statements` on `db`, in order, outside the server: for tests that
/// set a database up as an older release left it.
pub async fn execute(db: &crate::TestDb, statements: &[&str]) -> anyhow::Result<()> {
    use sqlx::Connection;
    if db.url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&db.url).await?;
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(*s)).execute(&mut c).await?;
        }
    } else {
        let mut c = sqlx::SqliteConnection::connect(&db.url).await?;
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(*s)).execute(&mut c).await?;
        }
    }
    Ok(())
}
