//! The console's platform pages, driven as a browser would: a real session
//! signed in through `/console/login` with its CSRF field, forms posted as
//! `application/x-www-form-urlencoded`, redirects read, and what each
//! change did checked through the admin API.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::access::add_member;
use fleetprompt_system_tests::{
    Backend, Recorder, Reply, TestApp, both_backends, http_client, rules_api, webchat,
};
use serde_json::{Value, json};

/// A browser signed in to the console: its cookies, kept by hand (the
/// client follows no redirect, so each answer can be checked).
struct Console {
    base: String,
    http: reqwest::Client,
    /// Name, path and value: a cookie of the same name on another path
    /// (one the server clears there) is another cookie, as in a browser.
    cookies: Vec<(String, String, String)>,
    csrf: String,
}

/// An answer: status, `Location`, body.
struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

fn form_body(fields: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", fields)
        .unwrap()
        .query()
        .unwrap_or("")
        .to_owned()
}

/// The value of the hidden CSRF field of the first form in `html`.
fn csrf_in(html: &str) -> Option<String> {
    let i = html.find("name=\"csrf_token\" value=\"")?;
    let rest = &html[i + 25..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The text of the element with `id` (up to the next tag).
fn text_of(html: &str, id: &str) -> Option<String> {
    let i = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[i..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].to_owned())
}

impl Console {
    fn new(base: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            cookies: Vec::new(),
            csrf: String::new(),
        }
    }

    fn cookie_header(&self, path: &str) -> String {
        self.cookies
            .iter()
            .filter(|(_, p, _)| path.starts_with(p.as_str()))
            .map(|(k, _, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = req.build().expect("request");
        let cookies = self.cookie_header(req.url().path());
        let mut req = reqwest::RequestBuilder::from_parts(self.http.clone(), req);
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        let r = req.send().await.expect("request");
        for v in r.headers().get_all("set-cookie") {
            let mut parts = v.to_str().unwrap().split(';');
            let (k, val) = parts.next().unwrap().split_once('=').unwrap();
            let path = parts
                .find_map(|a| a.trim().strip_prefix("Path="))
                .unwrap_or("/")
                .to_owned();
            self.cookies.retain(|(n, p, _)| !(n == k && *p == path));
            if !val.is_empty() {
                self.cookies.push((k.to_owned(), path, val.to_owned()));
            }
        }
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        Page {
            status: r.status().as_u16(),
            location,
            body: r.text().await.unwrap_or_default(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// Posts a form with this session's CSRF field.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut all = vec![("csrf_token", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields));
        self.send(req).await
    }

    /// Signs in through the sign-in form; the answer to the post.
    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let login = self.get("/console/login").await;
        assert_eq!(login.status, 200);
        let csrf = csrf_in(&login.body).expect("the sign-in form's CSRF field");
        let p = self
            .post_raw(
                "/console/login",
                &[
                    ("csrf_token", &csrf),
                    ("email", email),
                    ("password", password),
                ],
            )
            .await;
        // Signed in: the page it leads to (the console's home, or where
        // that sends a member) holds the session's CSRF field.
        let mut next = p.location.clone().filter(|_| p.status == 303);
        for _ in 0..3 {
            let Some(to) = next.take().filter(|to| !to.starts_with("/console/login")) else {
                break;
            };
            let page = self.get(&to).await;
            if page.status == 303 {
                next = page.location;
                continue;
            }
            assert_eq!(page.status, 200, "{to}: {}", page.body);
            self.csrf = csrf_in(&page.body).expect("the session's CSRF field");
        }
        p
    }
}

/// A console signed in as a new member of `app`'s tenant with `role`.
async fn signed_in(app: &TestApp, email: &str, role: &str) -> Console {
    let m = add_member(&app.db, &app.tenant.slug, email, "Operator", role)
        .await
        .unwrap();
    let mut c = Console::new(&app.server.url);
    let p = c.sign_in(&m.email, &m.password).await;
    assert_eq!(p.status, 303, "sign-in: {}", p.body);
    c
}

async fn api(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let (s, v) = app.request_as(&app.tenant.token, method, path, body).await;
    assert!(s.is_success(), "{path}: {s} {v}");
    v
}

async fn destinations_are_added_rotated_and_deleted_with_secrets_never_shown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut c = signed_in(&app, "admin@acme.test", "admin").await;

    // A Mattermost webhook: its URL's path is the credential.
    let secret_path = "hooks/s3cr3tPathNeverShown";
    let p = c
        .post(
            "/console/destinations",
            &[
                ("kind", "mattermost"),
                ("name", "mattermost"),
                ("webhook_url", &format!("http://127.0.0.1:9/{secret_path}")),
                ("max_in_flight", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    // A webhook: its signing secret is made and shown once.
    let p = c
        .post(
            "/console/destinations",
            &[
                ("kind", "webhook"),
                ("name", "ops"),
                ("url", "http://127.0.0.1:9/webhookSecretPath"),
                ("signing_secret", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let shown = text_of(&p.body, "signing-secret").expect("the signing secret, once");
    assert!(shown.starts_with("whsec_"), "{shown}");

    let list = api(&app, reqwest::Method::GET, "/admin/v1/destinations", None).await;
    let names: Vec<&str> = list["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(names.contains(&"mattermost") && names.contains(&"ops"));
    let page = c.get("/console/destinations").await;
    for text in [list.to_string(), page.body.clone()] {
        assert!(!text.contains("s3cr3tPathNeverShown"), "{text}");
        assert!(!text.contains("webhookSecretPath"));
        assert!(!text.contains(&shown));
    }
    assert!(page.body.contains(">set<"), "secrets show as set");

    // Rotate: the edit form never holds the secret; a new URL replaces it.
    let edit = c.get("/console/destinations/mattermost/edit").await;
    assert_eq!(edit.status, 200);
    assert!(!edit.body.contains("s3cr3tPathNeverShown"));
    let p = c
        .post(
            "/console/destinations/mattermost/edit",
            &[
                ("webhook_url", "http://127.0.0.1:9/hooks/rotated"),
                ("max_in_flight", "4"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let d = api(
        &app,
        reqwest::Method::GET,
        "/admin/v1/destinations/mattermost",
        None,
    )
    .await;
    assert_eq!(d["config"]["max_in_flight"], 4, "{d}");
    // An empty secret field keeps the stored one: still valid, still set.
    let p = c
        .post(
            "/console/destinations/mattermost/edit",
            &[("webhook_url", ""), ("max_in_flight", "")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    // A bad value is shown with the form again, nothing changed.
    let p = c
        .post(
            "/console/destinations/mattermost/edit",
            &[("webhook_url", "not a url")],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(p.body.contains("webhook_url"), "{}", p.body);

    // In use by an unfinished directive: the API's 409 in plain words,
    // with the force option.
    let (s, dir) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "ops", "body": {} },
                    "dedupe_key": "later", "delay_ms": 3_600_000 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{dir}");
    let confirm = c.get("/console/destinations/ops/delete").await;
    assert_eq!(confirm.status, 200);
    let p = c.post("/console/destinations/ops/delete", &[]).await;
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(
        p.body.contains("still in use") && p.body.contains("Unfinished directives deliver to it"),
        "{}",
        p.body
    );
    assert!(p.body.contains("name=\"force\""));
    let p = c
        .post("/console/destinations/ops/delete", &[("force", "1")])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let list = api(&app, reqwest::Method::GET, "/admin/v1/destinations", None).await;
    assert_eq!(list["destinations"].as_array().unwrap().len(), 1, "{list}");
    let d = api(
        &app,
        reqwest::Method::GET,
        &format!("/admin/v1/directives/{}", dir["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(d["status"], "cancelled", "{d}");

    // The changes are on the tenant's audit log, by this member.
    let audit = api(
        &app,
        reqwest::Method::GET,
        &format!("/admin/v1/timeline?subject=tenant:{}", app.tenant.id),
        None,
    )
    .await;
    let text = audit.to_string();
    for t in [
        "destination.created",
        "destination.updated",
        "destination.deleted",
    ] {
        assert!(text.contains(t), "{t} missing: {text}");
    }
    assert!(!text.contains("s3cr3tPathNeverShown"));
}

async fn members_are_added_and_can_sign_in_then_changed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut c = signed_in(&app, "admin@acme.test", "admin").await;

    let p = c
        .post(
            "/console/members",
            &[
                ("email", "ann@acme.test"),
                ("name", "Ann"),
                ("role", "agent"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let password = text_of(&p.body, "first-secret").expect("the one-time password");
    let mut ann = Console::new(&app.server.url);
    assert_eq!(ann.sign_in("ann@acme.test", &password).await.status, 303);
    // Shown once: the list does not hold it again.
    assert!(!c.get("/console/members").await.body.contains(&password));

    let members = api(&app, reqwest::Method::GET, "/admin/v1/members", None).await;
    let ann_id = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "ann@acme.test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let p = c
        .post(
            &format!("/console/members/{ann_id}/role"),
            &[("role", "admin")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let m = api(
        &app,
        reqwest::Method::GET,
        &format!("/admin/v1/members/{ann_id}"),
        None,
    )
    .await;
    assert_eq!(m["member"]["role"], "admin", "{m}");

    // Disabled: signed out at once, and refused at sign-in.
    let p = c
        .post(&format!("/console/members/{ann_id}/disable"), &[])
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(ann.get("/console/tokens").await.status, 303);
    let mut again = Console::new(&app.server.url);
    assert_eq!(again.sign_in("ann@acme.test", &password).await.status, 401);
    let p = c
        .post(&format!("/console/members/{ann_id}/enable"), &[])
        .await;
    assert_eq!(p.status, 303);

    // A reset: the new password is shown once; the old one is refused.
    let p = c
        .post(&format!("/console/members/{ann_id}/reset-password"), &[])
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let new_password = text_of(&p.body, "first-secret").expect("the new password");
    assert_ne!(new_password, password);
    let mut old = Console::new(&app.server.url);
    assert_eq!(old.sign_in("ann@acme.test", &password).await.status, 401);
    let mut new = Console::new(&app.server.url);
    assert_eq!(
        new.sign_in("ann@acme.test", &new_password).await.status,
        303
    );

    // An invite: the link, once.
    let p = c
        .post(
            "/console/members",
            &[
                ("email", "bo@acme.test"),
                ("name", ""),
                ("role", "agent"),
                ("invite", "1"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let link = text_of(&p.body, "first-secret").unwrap();
    assert!(link.contains("/console/invite#fpi_"), "{link}");

    // A duplicate email is shown with the form, in plain words.
    let p = c
        .post(
            "/console/members",
            &[("email", "ann@acme.test"), ("role", "agent")],
        )
        .await;
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(p.body.contains("class=\"error\""));
}

async fn tokens_are_created_once_work_and_are_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut c = signed_in(&app, "agent@acme.test", "agent").await;
    let p = c.post("/console/tokens", &[("name", "laptop")]).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let token = text_of(&p.body, "new-token-value").expect("the token, once");
    assert!(token.starts_with("fpa_"), "{token}");
    assert!(p.body.contains("data-copy=\"new-token-value\""));

    let http = http_client();
    let me = |t: String| {
        let http = http.clone();
        let url = format!("{}/admin/v1/me", app.server.url);
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(token.clone()).await, 200);
    let list = c.get("/console/tokens").await;
    assert!(list.body.contains("laptop") && !list.body.contains(&token));
    let prefix = token.split('.').next().unwrap();
    assert!(list.body.contains(prefix), "the prefix is listed");
    // The prefix is `fpa_<token id>`.
    let id = prefix.trim_start_matches("fpa_");
    let p = c.post(&format!("/console/tokens/{id}/revoke"), &[]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(me(token).await, 401);
}

const GOOD_RULES: &str = r#"[[rule]]
id = "console.order"
on = "order.created"

[[rule.directive]]
kind = "noop"
dedupe_key = "console-order:{{ signal.id }}"
"#;

async fn rules_are_checked_backtested_and_published(backend: Backend) {
    let rules_app = rules_api::spawn(backend).await;
    let app = &rules_app.app;
    let mut c = signed_in(app, "admin@acme.test", "admin").await;
    // Signals for the backtest: three orders in the last minutes.
    for n in 0..3 {
        let (s, v) = app
            .post(
                "/admin/v1/signals",
                json!({ "type": "order.created", "subject": format!("order:{n}"),
                        "payload": { "order_id": format!("o{n}"), "total": 10 }, "dedupe_key": format!("o{n}") }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    assert_eq!(c.get("/console/rules/new").await.status, 200);
    let bad = "[[rule]]\nid = \"broken\"\non = 'order.created\n";
    let p = c
        .post(
            "/console/rules",
            &[
                ("name", "orders.toml"),
                ("body", bad),
                ("action", "check"),
                ("new", "1"),
            ],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    let i = p.body.find("<code>orders.toml:").expect("file:line:col");
    let loc = &p.body[i + 6..i + 40];
    let parts: Vec<&str> = loc.split(':').collect();
    assert_eq!(parts[0], "orders.toml");
    assert_eq!(parts[1], "3", "the problem's line: {loc}");
    let col = parts[2].split('<').next().unwrap();
    assert!(col.parse::<u32>().is_ok(), "{loc}");
    assert!(p.body.contains("class=\"bad\""), "the line is marked");

    let p = c
        .post(
            "/console/rules",
            &[
                ("name", "orders.toml"),
                ("body", GOOD_RULES),
                ("action", "check"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("No problems") && p.body.contains("console.order"));

    let p = c
        .post(
            "/console/rules",
            &[
                ("name", "orders.toml"),
                ("body", GOOD_RULES),
                ("action", "backtest"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let table = &p.body[p.body.find("id=\"backtest-rules\"").expect("counts")..];
    let row = &table[table.find("console.order").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|c| c.split('<').next().unwrap())
        .collect();
    // matched, skipped, errors, would create, created.
    assert_eq!(cells, ["3", "0", "0", "3", "0"], "{row}");
    // Nothing was written by the backtest.
    let files = api(app, reqwest::Method::GET, "/admin/v1/workflows/files", None).await;
    assert_eq!(files["files"].as_array().unwrap().len(), 0, "{files}");

    let p = c
        .post(
            "/console/rules",
            &[
                ("name", "orders.toml"),
                ("body", GOOD_RULES),
                ("action", "publish"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        p.location.as_deref(),
        Some("/console/rules/files/orders.toml")
    );
    let w = api(app, reqwest::Method::GET, "/admin/v1/workflows", None).await;
    let rule = w["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "console.order")
        .unwrap_or_else(|| panic!("not active: {w}"));
    assert!(
        rule["source"]
            .as_str()
            .unwrap()
            .starts_with("published:orders.toml@"),
        "{rule}"
    );
    let overview = c.get("/console/rules").await;
    assert!(overview.body.contains("console.order") && overview.body.contains("disk-order"));
    assert!(overview.body.contains("/console/rules/files/orders.toml"));
    let file = c.get("/console/rules/files/orders.toml").await;
    assert!(
        file.body.contains("console-order:"),
        "the editor holds the file"
    );

    // Deleted through its confirmation.
    assert_eq!(
        c.get("/console/rules/files/orders.toml/delete")
            .await
            .status,
        200
    );
    let p = c.post("/console/rules/files/orders.toml/delete", &[]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let w = api(app, reqwest::Method::GET, "/admin/v1/workflows", None).await;
    assert!(!w.to_string().contains("console.order"), "{w}");
}

async fn directives_are_filtered_paged_retried_and_cancelled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let recorder = Recorder::start().await;
    recorder.script("/hook", [Reply::status(400)]);
    app.webhook("hook", &format!("{}/hook", recorder.url)).await;
    let (s, failing) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "hook", "body": {} },
                    "dedupe_key": "fails-once", "max_attempts": 1, "subject": "conversation:abc" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{failing}");
    let failing = failing["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&failing, &["failed"], Duration::from_secs(20))
        .await;
    for n in 0..55 {
        let (s, v) = app
            .post(
                "/admin/v1/directives",
                json!({ "kind": "noop", "args": {}, "dedupe_key": format!("later-{n}"), "delay_ms": 3_600_000 }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let mut c = signed_in(&app, "admin@acme.test", "admin").await;

    let p = c.get("/console/directives?status=failed").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains(&failing));
    assert_eq!(p.body.matches("<tr id=\"directive-").count(), 1);
    assert!(
        p.body.contains("href=\"/console/conversations/abc\""),
        "the subject's timeline"
    );

    // Newest first, 50 a page, then the rest.
    let first = c.get("/console/directives?kind=noop&status=pending").await;
    assert_eq!(first.body.matches("<tr id=\"directive-").count(), 50);
    let i = first.body.find("rel=\"next\"").expect("an older page");
    let href_start = first.body[..i].rfind("href=\"").unwrap() + 6;
    let href = first.body[href_start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let second = c.get(&href).await;
    assert_eq!(second.status, 200, "{href}");
    assert_eq!(second.body.matches("<tr id=\"directive-").count(), 5);
    assert!(!second.body.contains("rel=\"next\""));
    let ids = |b: &str| -> Vec<String> {
        b.match_indices("<tr id=\"directive-")
            .map(|(i, _)| b[i + 18..].split('"').next().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (ids(&first.body), ids(&second.body));
    assert!(a.iter().all(|x| !b.contains(x)));
    let mut sorted = a.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(a, sorted, "newest first");

    // Retry: pending again, and it runs (the receiver now answers 200).
    let p = c
        .post(
            &format!("/console/directives/{failing}/retry"),
            &[("back", "/console/directives?status=failed")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        p.location.as_deref(),
        Some("/console/directives?status=failed")
    );
    let d = app
        .wait_for_status(
            &failing,
            &["pending", "running", "succeeded"],
            Duration::from_secs(5),
        )
        .await;
    assert_ne!(d["status"], "failed", "{d}");
    app.wait_for_status(&failing, &["succeeded"], Duration::from_secs(20))
        .await;

    // Cancel a pending one.
    let p = c
        .post(&format!("/console/directives/{}/cancel", a[0]), &[])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let d = api(
        &app,
        reqwest::Method::GET,
        &format!("/admin/v1/directives/{}", a[0]),
        None,
    )
    .await;
    assert_eq!(d["status"], "cancelled", "{d}");
}

async fn packages_are_uninstalled_through_the_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let site = webchat::site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let mut c = signed_in(&app, "admin@acme.test", "admin").await;

    let p = c.get("/console/packages").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("website_chat") && p.body.contains("Installed"));
    let confirm = c.get("/console/packages/website_chat/uninstall").await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Uninstall"));
    let p = c
        .post("/console/packages/website_chat/uninstall", &[])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);

    let r = webchat::bootstrap(&app, &key).await;
    assert_eq!(r.status().as_u16(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "package_not_installed", "{v}");
    assert!(
        c.get("/console/packages")
            .await
            .body
            .contains("Uninstalled")
    );

    let p = c.post("/console/packages/website_chat/install", &[]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(webchat::bootstrap(&app, &key).await.status().as_u16(), 200);

    let p = c.post("/console/packages/nonesuch/install", &[]).await;
    assert_eq!(p.status, 422, "{}", p.body);
}

/// Every form the platform pages add, with a path that exists.
const FORMS: &[&str] = &[
    "/console/packages/website_chat/install",
    "/console/packages/website_chat/uninstall",
    "/console/destinations",
    "/console/destinations/mattermost/edit",
    "/console/destinations/mattermost/delete",
    "/console/members",
    "/console/members/{member}/role",
    "/console/members/{member}/disable",
    "/console/members/{member}/enable",
    "/console/members/{member}/reset-password",
    "/console/tokens",
    "/console/tokens/{token}/revoke",
    "/console/rules",
    "/console/rules/files/orders.toml/delete",
    "/console/directives/{directive}/retry",
    "/console/directives/{directive}/cancel",
];

/// The admin-only pages.
const ADMIN_PAGES: &[&str] = &[
    "/console/packages",
    "/console/packages/website_chat/uninstall",
    "/console/destinations",
    "/console/destinations/mattermost/edit",
    "/console/destinations/mattermost/delete",
    "/console/members",
    "/console/rules",
    "/console/rules/new",
    "/console/rules/files/orders.toml",
    "/console/rules/files/orders.toml/delete",
];

async fn csrf_is_refused_and_agents_are_forbidden(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": "http://127.0.0.1:9/hooks/x" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let put = app
        .http
        .put(format!(
            "{}/admin/v1/workflows/files/orders.toml",
            app.server.url
        ))
        .bearer_auth(&app.tenant.token)
        .header("content-type", "application/toml")
        .body(GOOD_RULES)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let (s, d) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "noop", "args": {}, "dedupe_key": "x", "delay_ms": 3_600_000 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let directive = d["id"].as_str().unwrap().to_owned();

    let mut admin = signed_in(&app, "admin@acme.test", "admin").await;
    let mut agent = signed_in(&app, "agent@acme.test", "agent").await;
    let p = agent.post("/console/tokens", &[("name", "mine")]).await;
    assert_eq!(p.status, 200);
    let members = api(&app, reqwest::Method::GET, "/admin/v1/members", None).await;
    let member = members["members"][0]["id"].as_str().unwrap().to_owned();
    let fill = |p: &str| {
        p.replace("{member}", &member)
            .replace("{directive}", &directive)
            .replace("{token}", "tok_00000000000000000000000000")
    };

    // A forged or missing CSRF value: refused before anything happens.
    for form in FORMS {
        let path = fill(form);
        for fields in [vec![("csrf_token", "forged")], vec![]] {
            let p = admin.post_raw(&path, &fields).await;
            assert_eq!(p.status, 403, "{path} with {fields:?}: {}", p.body);
        }
    }
    let d = api(
        &app,
        reqwest::Method::GET,
        &format!("/admin/v1/directives/{directive}"),
        None,
    )
    .await;
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(
        api(&app, reqwest::Method::GET, "/admin/v1/destinations", None).await["destinations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An agent: every admin page and action is a 403 page; their own
    // tokens and the directive list stay theirs (without actions).
    for path in ADMIN_PAGES {
        let p = agent.get(path).await;
        assert_eq!(p.status, 403, "GET {path}");
        assert!(p.body.contains("admin role"), "{}", p.body);
    }
    for form in FORMS.iter().filter(|f| !f.starts_with("/console/tokens")) {
        let path = fill(form);
        let p = agent
            .post(
                &path,
                &[
                    ("name", "x"),
                    ("kind", "webhook"),
                    ("role", "admin"),
                    ("action", "publish"),
                    ("body", GOOD_RULES),
                    ("email", "x@acme.test"),
                ],
            )
            .await;
        assert_eq!(p.status, 403, "POST {path}: {}", p.body);
    }
    let p = agent.get("/console/directives").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains(&directive) && !p.body.contains("/cancel\""));
    assert!(
        !p.body.contains("href=\"/console/members\""),
        "no admin nav"
    );
    let p = admin.get("/console/directives").await;
    assert!(
        p.body
            .contains(&format!("/console/directives/{directive}/cancel"))
    );
    assert_eq!(agent.get("/console/tokens").await.status, 200);
    // Nothing an agent posted changed anything.
    let d = api(
        &app,
        reqwest::Method::GET,
        &format!("/admin/v1/directives/{directive}"),
        None,
    )
    .await;
    assert_eq!(d["status"], "pending", "{d}");
    let members = api(&app, reqwest::Method::GET, "/admin/v1/members", None).await;
    assert!(
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["email"] == "admin@acme.test" || m["role"] == "agent"),
        "{members}"
    );
    // Every console answer says how long the server took.
    let r = http_client()
        .get(format!("{}/console/login", app.server.url))
        .send()
        .await
        .unwrap();
    let timing = r.headers()["server-timing"].to_str().unwrap().to_owned();
    assert!(timing.starts_with("app;dur="), "{timing}");
}

both_backends!(
    destinations_are_added_rotated_and_deleted_with_secrets_never_shown,
    members_are_added_and_can_sign_in_then_changed,
    tokens_are_created_once_work_and_are_revoked,
    rules_are_checked_backtested_and_published,
    directives_are_filtered_paged_retried_and_cancelled,
    packages_are_uninstalled_through_the_page,
    csrf_is_refused_and_agents_are_forbidden,
);
