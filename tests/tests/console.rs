//! The operator console, end to end over HTTP with the real binary: sign-in
//! (a wrong password, a forged CSRF value, throttling), CSRF on every
//! console form, an agent kept out of admin pages and actions, tenants kept
//! apart (404 for another tenant's conversation, a session useless for
//! another tenant), signing out, HTML errors, the actions creating their
//! directives, private notes never reaching the visitor, and the live feed.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::access::{Member, add_member};
use fleetprompt_system_tests::console::{Browser, Page};
use fleetprompt_system_tests::webchat::{
    ORIGIN, directives_of, say, say_from, signals_of, site, timeline, visitor, visitor_from,
    wait_until,
};
use fleetprompt_system_tests::{Backend, TestApp, both_backends, create_tenant};
use serde_json::Value;

/// A browser signed in as `m`.
async fn signed_in(app: &TestApp, m: &Member) -> Browser {
    let b = Browser::new(&app.server.url);
    let r = b.sign_in(&m.email, &m.password).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    b
}

/// A site, a visitor and one message; the conversation id and the site.
async fn conversation(app: &TestApp) -> (String, Value, String) {
    let site = site(app).await;
    let token = visitor(app, site["public_key"].as_str().unwrap()).await;
    let conv = say(app, &token, "Where is my parcel?").await;
    (conv, site, token)
}

async fn history(app: &TestApp, token: &str) -> Value {
    app.http
        .get(format!("{}/v1/widget/messages", app.server.url))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn sign_in_refuses_wrong_passwords_forged_csrf_and_throttles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann Admin", "admin")
        .await
        .unwrap();
    let b = Browser::new(&app.server.url);

    // Every page but sign-in sends a stranger there, and back after.
    let r = b.get("/console/conversations?status=open").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location.as_deref(),
        Some("/console/login?next=%2Fconsole%2Fconversations%3Fstatus%3Dopen")
    );
    let login = b.get("/console/login").await;
    assert_eq!(login.status, StatusCode::OK);
    let form = login
        .forms()
        .into_iter()
        .find(|f| f.action == "/console/login")
        .unwrap();
    assert_eq!(form.method, "post");
    let names: Vec<&str> = form.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.iter().any(|n| n.starts_with("csrf")), "{names:?}");
    assert!(names.contains(&"email") && names.contains(&"password"));

    // A forged CSRF value is refused, even with the right password.
    let r = b
        .post(
            "/console/login",
            &[
                ("csrf_token", "forged"),
                ("email", &ann.email),
                ("password", &ann.password),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.content_type.starts_with("text/html"));
    assert!(b.cookie("fleetprompt_session").is_none());
    // A real token without the browser's nonce cookie (another site
    // posting it) is refused too.
    let stranger = Browser::new(&app.server.url);
    let r = stranger
        .post(
            "/console/login",
            &[
                ("csrf_token", &login.csrf().unwrap()),
                ("email", &ann.email),
                ("password", &ann.password),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A wrong password is refused with a message.
    let r = b.sign_in(&ann.email, "not the password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body.contains("The email or password is wrong."),
        "{}",
        r.body
    );
    assert!(b.cookie("fleetprompt_session").is_none());

    // Signing in never sends the browser to another site.
    for next in ["https://evil.example/", "//evil.example/x", "/admin/v1/me"] {
        let b2 = Browser::new(&app.server.url);
        let login = b2
            .get(&format!(
                "/console/login?next={}",
                next.replace('/', "%2F").replace(':', "%3A")
            ))
            .await;
        let form = login
            .forms()
            .into_iter()
            .find(|f| f.action == "/console/login")
            .unwrap();
        let r = b2
            .submit(
                &form,
                &[
                    ("email", &ann.email),
                    ("password", &ann.password),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.location.as_deref(), Some("/console"), "next={next}");
    }

    // The right one signs in, with the cookie the admin API uses too.
    let r = b.sign_in(&ann.email, &ann.password).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let set = r
        .set_cookies
        .iter()
        .find(|c| c.starts_with("fleetprompt_session="))
        .expect("session cookie");
    for part in ["HttpOnly", "SameSite=Lax", "Path=/;"] {
        assert!(set.contains(part), "{set}");
    }
    // An earlier release's cookie (Path=/admin) is cleared beside it.
    assert!(
        r.set_cookies
            .iter()
            .any(|c| c.starts_with("fleetprompt_session=;")
                && c.contains("Path=/admin")
                && c.contains("Max-Age=0")),
        "{:?}",
        r.set_cookies
    );
    let home = b.get("/console").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Ann Admin"), "{}", home.body);
    let r = app
        .http
        .get(format!("{}/admin/v1/me", app.server.url))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Throttling: after 5 failures the right password is refused too.
    let cy = add_member(&app.db, "acme", "cy@example.com", "Cy", "agent")
        .await
        .unwrap();
    let c = Browser::new(&app.server.url);
    for i in 0..5 {
        let r = c.sign_in(&cy.email, "wrong wrong wrong").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = c.sign_in(&cy.email, &cy.password).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.body.contains("Too many failed sign-ins"), "{}", r.body);
    let secs: u64 = r.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=900).contains(&secs));
    assert!(c.cookie("fleetprompt_session").is_none());
}

/// Every post form of the pages an admin sees, each refused without the
/// session's CSRF value, and nothing changed by them.
async fn every_console_form_checks_csrf(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann Admin", "admin")
        .await
        .unwrap();
    let (conv, site, token) = conversation(&app).await;
    let sid = site["site_id"].as_str().unwrap();
    // A saved reply, so its edit and delete forms are on its page.
    let (st, v) = app
        .post(
            "/admin/v1/saved-replies",
            serde_json::json!({ "title": "Hello", "content": "Hi there." }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let b = signed_in(&app, &ann).await;
    let mut forms = Vec::new();
    for path in [
        "/console".to_owned(),
        format!("/console/conversations/{conv}"),
        "/console/sites".to_owned(),
        format!("/console/sites/{sid}"),
        "/console/saved-replies".to_owned(),
    ] {
        let p = b.get(&path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}: {}", p.body);
        forms.extend(p.forms().into_iter().filter(|f| f.method == "post"));
    }
    let actions: Vec<&str> = forms.iter().map(|f| f.action.as_str()).collect();
    for want in [
        "/console/logout",
        "/reply",
        "/note",
        "/close",
        "/assign",
        "/console/sites",
        "/verify",
        "/rotate",
        "/disable",
        "/console/saved-replies",
        "/delete",
    ] {
        assert!(
            actions.iter().any(|a| a.ends_with(want)),
            "no {want} form in {actions:?}"
        );
    }
    let before = timeline(&app, &conv).await.len();
    for f in &forms {
        assert!(
            f.fields.iter().any(|(k, _)| k.starts_with("csrf")),
            "{} has no csrf field",
            f.action
        );
        let r = b.submit(f, &[("csrf_token", "forged")]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}: {}", f.action, r.body);
        assert!(r.content_type.starts_with("text/html"), "{}", f.action);
        let without: Vec<(&str, &str)> = f
            .fields
            .iter()
            .filter(|(k, _)| !k.starts_with("csrf"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = b.post(&f.action, &without).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", f.action);
    }
    // Nothing happened: no directive or note on the conversation, the site
    // as it was, the session still signed in.
    assert_eq!(timeline(&app, &conv).await.len(), before);
    assert_eq!(
        history(&app, &token).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, v) = app.get(&format!("/admin/v1/sites/{sid}")).await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(b.get("/console").await.status, StatusCode::OK);
    let (_, v) = app.get("/admin/v1/sites").await;
    assert_eq!(v["sites"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = app.get("/admin/v1/saved-replies").await;
    assert_eq!(v["saved_replies"][0]["content"], "Hi there.", "{v}");
    assert_eq!(v["saved_replies"].as_array().unwrap().len(), 1, "{v}");
}

async fn an_agent_sees_no_admin_pages_or_actions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let agent = add_member(&app.db, "acme", "al@example.com", "Al Agent", "agent")
        .await
        .unwrap();
    let (conv, site, _) = conversation(&app).await;
    let sid = site["site_id"].as_str().unwrap();
    let b = signed_in(&app, &agent).await;
    let inbox = b.get("/console/conversations").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(
        !inbox.body.contains("href=\"/console/sites\""),
        "no Sites in the nav"
    );
    let csrf = inbox.csrf().unwrap();
    for path in ["/console/sites".to_owned(), format!("/console/sites/{sid}")] {
        let r = b.get(&path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.body.contains("admin role"), "{}", r.body);
    }
    for path in [
        "/console/sites".to_owned(),
        format!("/console/sites/{sid}/disable"),
        format!("/console/sites/{sid}/rotate"),
        format!("/console/sites/{sid}/verify"),
        format!("/console/sites/{sid}"),
    ] {
        let r = b
            .post(
                &path,
                &[("csrf_token", &csrf), ("domains", "evil.example.com")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    let (_, v) = app.get(&format!("/admin/v1/sites/{sid}")).await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(
        app.get("/admin/v1/sites").await.1["sites"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Agents answer conversations: a reply through the console is the
    // directive the API makes, with the agent as its origin.
    let page = b.get(&format!("/console/conversations/{conv}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains(">Retry"),
        "agents cannot retry directives"
    );
    let reply = page
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/reply"))
        .unwrap();
    let r = b.submit(&reply, &[("content", "On its way!")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let entries = wait_until("the reply", Duration::from_secs(10), async || {
        let e = timeline(&app, &conv).await;
        (!signals_of(&e, "webchat.reply.sent").is_empty()).then_some(e)
    })
    .await;
    let d = directives_of(&entries, "webchat.reply_send");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["origin"]["type"], "member", "{}", d[0]);
    assert_eq!(d[0]["origin"]["name"], "Al Agent", "{}", d[0]);
    // The retry action itself is refused for an agent.
    let r = b
        .post(
            &format!(
                "/console/conversations/{conv}/directives/{}/retry",
                d[0]["id"].as_str().unwrap()
            ),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

async fn tenants_are_kept_apart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "admin")
        .await
        .unwrap();
    create_tenant(&app.db, "globex").await.unwrap();
    let gus = add_member(&app.db, "globex", "gus@example.com", "Gus", "admin")
        .await
        .unwrap();
    let (conv, site, token) = conversation(&app).await;
    let sid = site["site_id"].as_str().unwrap();

    let a = signed_in(&app, &ann).await;
    assert_eq!(
        a.get(&format!("/console/conversations/{conv}"))
            .await
            .status,
        StatusCode::OK
    );
    // Globex's member: acme's conversation and site do not exist for them.
    let g = signed_in(&app, &gus).await;
    let r = g.get(&format!("/console/conversations/{conv}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.content_type.starts_with("text/html"));
    assert!(!r.body.contains("Where is my parcel?"));
    assert_eq!(
        g.get(&format!("/console/sites/{sid}")).await.status,
        StatusCode::NOT_FOUND
    );
    let csrf = g.get("/console").await.csrf().unwrap();
    for action in ["reply", "note", "close", "escalate"] {
        let r = g
            .post(
                &format!("/console/conversations/{conv}/{action}"),
                &[
                    ("csrf_token", &csrf),
                    ("content", "hi"),
                    ("destination", "x"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}: {}", r.body);
    }
    let inbox = g.get("/console/conversations?status=all").await;
    assert!(!inbox.body.contains(&conv), "globex's inbox lists acme's");
    // Globex's live feed hears nothing of acme's messages; acme's does.
    let feed = |b: &Browser| {
        app.http
            .get(format!("{}/console/live", app.server.url))
            .header("cookie", b.cookie_header())
            .send()
    };
    let mut gf = feed(&g).await.unwrap();
    let mut af = feed(&a).await.unwrap();
    say(&app, &token, "Anyone there?").await;
    let mut heard = String::new();
    while !heard.contains(&conv) {
        let c = tokio::time::timeout(Duration::from_secs(10), af.chunk())
            .await
            .expect("acme's feed hears it")
            .unwrap()
            .unwrap();
        heard.push_str(&String::from_utf8_lossy(&c));
    }
    let mut other = String::new();
    while let Ok(Ok(Some(c))) = tokio::time::timeout(Duration::from_millis(1500), gf.chunk()).await
    {
        other.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(other.contains("event: ready"), "{other}");
    assert!(!other.contains(&conv), "{other}");
    // Acme's session cookie with globex's CSRF value (or its own) gets
    // nothing of globex: it is acme's session, whatever it is sent with.
    let mixed = Browser::new(&app.server.url);
    mixed.set_cookie(
        "fleetprompt_session",
        a.cookie("fleetprompt_session").as_deref(),
    );
    let r = mixed
        .post(
            &format!("/console/conversations/{conv}/reply"),
            &[("csrf_token", &csrf), ("content", "from globex")],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "globex's CSRF value is not acme's"
    );
    let home = mixed.get("/console").await;
    assert!(home.body.contains("acme") && !home.body.contains("globex"));
    // Nothing reached the visitor: their two messages, no reply.
    let h = history(&app, &token).await;
    let roles: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["visitor", "visitor"], "{h}");
}

async fn signing_out_kills_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "admin")
        .await
        .unwrap();
    let b = signed_in(&app, &ann).await;
    let cookie = b.cookie("fleetprompt_session").unwrap();
    let home = b.get("/console").await;
    let out = home
        .forms()
        .into_iter()
        .find(|f| f.action == "/console/logout")
        .unwrap();
    let r = b.submit(&out, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location.as_deref(), Some("/console/login?signed_out=1"));
    assert!(
        b.cookie("fleetprompt_session").is_none(),
        "the cookie is cleared"
    );
    // The old cookie is refused everywhere, now.
    let old = Browser::new(&app.server.url);
    old.set_cookie("fleetprompt_session", Some(&cookie));
    let r = old.get("/console").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location.unwrap().starts_with("/console/login"));
    let r = app
        .http
        .get(format!("{}/admin/v1/me", app.server.url))
        .header("cookie", format!("fleetprompt_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

async fn errors_are_html_pages_and_the_api_keeps_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "admin")
        .await
        .unwrap();
    let b = signed_in(&app, &ann).await;
    // Pages allow only their own origin's scripts and are never framed.
    let home = b.get("/console").await;
    let csp = home.csp.expect("a Content-Security-Policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let r: Page = b.get("/console/no-such-page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.content_type.starts_with("text/html"),
        "{}",
        r.content_type
    );
    assert!(r.body.contains("<main"), "{}", r.body);
    let r = b.get("/console/conversations/conv_nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.content_type.starts_with("text/html"));
    let (s, v) = app.get("/admin/v1/no-such-route").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    // The assets are content-addressed and cached for a year.
    let css = r
        .body
        .split("href=\"")
        .find_map(|x| x.strip_prefix("/console/assets/").map(|_| x))
        .and_then(|x| x.split('"').next())
        .unwrap()
        .to_owned();
    let a = b.get(&css).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type.starts_with("text/css"));
    assert!(b.get("/console/assets/console.0000.css").await.status == StatusCode::NOT_FOUND);

    // Uninstalling the website chat package takes its pages away; installing
    // it again brings them back.
    let inbox = b.get("/console/conversations").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.body.contains("href=\"/console/conversations\""));
    let (s, v) =
        fleetprompt_system_tests::packages::install(&app, "website_chat", serde_json::json!({}))
            .await;
    assert!(s.is_success(), "{v}");
    let (s, v) = fleetprompt_system_tests::packages::uninstall(&app, "website_chat").await;
    assert!(s.is_success(), "{v}");
    for path in ["/console/conversations", "/console/sites"] {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.body.contains("not installed"), "{}", r.body);
    }
    let home = b.get("/console").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        !home.body.contains("href=\"/console/conversations\""),
        "no Inbox in the nav without the package"
    );
    let (s, v) =
        fleetprompt_system_tests::packages::install(&app, "website_chat", serde_json::json!({}))
            .await;
    assert!(s.is_success(), "{v}");
    let inbox = b.get("/console/conversations").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.body.contains("href=\"/console/conversations\""));
}

/// A note stays with members; a reply reaches the visitor; the live feed
/// hears a visitor's message.
async fn notes_replies_and_the_live_feed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "admin")
        .await
        .unwrap();
    let (conv, _, token) = conversation(&app).await;
    let b = signed_in(&app, &ann).await;

    // The live feed, with the session cookie.
    let mut feed = app
        .http
        .get(format!("{}/console/live", app.server.url))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status().as_u16(), 200);
    assert!(
        feed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    say(&app, &token, "Hello again").await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&conv) {
        let chunk = tokio::time::timeout_at(deadline, feed.chunk())
            .await
            .expect("a live event in time")
            .unwrap()
            .expect("the feed stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"role\":\"visitor\""), "{seen}");
    // Without a session there is no feed.
    let r = Browser::new(&app.server.url).get("/console/live").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    let page = b.get(&format!("/console/conversations/{conv}")).await;
    let note = page
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/note"))
        .unwrap();
    let r = b
        .submit(&note, &[("content", "VIP customer, be nice")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = b.get(&format!("/console/conversations/{conv}")).await;
    assert!(page.body.contains("VIP customer, be nice"));
    assert!(
        page.body.contains("Note added."),
        "the flash message shows once"
    );
    assert!(
        !b.get(&format!("/console/conversations/{conv}"))
            .await
            .body
            .contains("Note added.")
    );
    let entries = timeline(&app, &conv).await;
    let notes = signals_of(&entries, "webchat.note.added");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["payload"]["author"]["name"], "Ann", "{}", notes[0]);
    let reply = page
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/reply"))
        .unwrap();
    b.submit(&reply, &[("content", "We are on it")]).await;
    let h = wait_until("the reply", Duration::from_secs(10), async || {
        let h = history(&app, &token).await;
        (h["messages"].as_array().unwrap().len() == 3).then_some(h)
    })
    .await;
    let text = h.to_string();
    assert!(text.contains("We are on it"));
    assert!(
        !text.contains("VIP customer"),
        "a note never reaches the visitor"
    );

    // The inbox lists it, and finds it by text.
    let inbox = b.get("/console/conversations?q=parcel").await;
    assert!(inbox.body.contains(&conv), "{}", inbox.body);
    let inbox = b.get("/console/conversations?q=nothing-like-this").await;
    assert!(!inbox.body.contains(&conv));
    // Closing is a directive too; the closed conversation leaves the
    // default (open) inbox.
    let close = page
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/close"))
        .unwrap();
    let r = b.submit(&close, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let entries = timeline(&app, &conv).await;
    assert_eq!(
        directives_of(&entries, "webchat.conversation.close").len(),
        1
    );
    assert!(!b.get("/console/conversations").await.body.contains(&conv));
    assert!(
        b.get("/console/conversations?status=ended")
            .await
            .body
            .contains(&conv)
    );
}

/// The invite link's page sets a password and signs in, once.
async fn an_invite_sets_a_password_and_signs_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let out = fleetprompt_system_tests::cli(
        &app.db,
        &[
            "user",
            "add",
            "--tenant",
            "acme",
            "--email",
            "bo@example.com",
            "--name",
            "Bo",
            "--role",
            "admin",
            "--invite",
            "--json",
        ],
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let invite = v["invite_token"].as_str().unwrap().to_owned();
    assert!(
        v["invite_link"]
            .as_str()
            .unwrap()
            .contains(&format!("/console/invite#{invite}")),
        "{v}"
    );
    let b = Browser::new(&app.server.url);
    let page = b.get("/console/invite").await;
    assert_eq!(page.status, StatusCode::OK);
    let form = page
        .forms()
        .into_iter()
        .find(|f| f.action == "/console/invite")
        .unwrap();
    let password = "a long new password";
    let r = b
        .submit(
            &form,
            &[
                ("csrf_token", "forged"),
                ("invite", &invite),
                ("password", password),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b
        .submit(&form, &[("invite", &invite), ("password", password)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(b.get("/console").await.body.contains("Bo"));
    // Once only; the password it set signs in.
    let again = Browser::new(&app.server.url);
    let form = again
        .get("/console/invite")
        .await
        .forms()
        .into_iter()
        .find(|f| f.action == "/console/invite")
        .unwrap();
    let r = again
        .submit(
            &form,
            &[("invite", &invite), ("password", "another long password")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body.contains("not valid"), "{}", r.body);
    let r = again.sign_in("bo@example.com", password).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

/// On SQLite, `serve` adds a demo console member and leaves its sign-in
/// in `<data dir>/demo-console-login`, readable by its owner only.
async fn the_demo_has_a_console_member(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = app.db.dir.join("demo-console-login");
    if backend == Backend::Postgres {
        assert!(!path.exists());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap()
            .trim()
            .to_owned()
    };
    let b = Browser::new(&app.server.url);
    let r = b.sign_in(&field("email"), &field("password")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let home = b.get("/console").await;
    assert!(
        home.body.contains("demo") && home.body.contains("admin"),
        "{}",
        home.body
    );
    let demo = reqwest::get(format!("{}/demo", app.server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        demo.contains("href=\"/console\""),
        "the demo page links the console"
    );
}

/// A failed escalation shows its error in plain words, and an admin
/// retries it from the conversation's page.
async fn an_admin_retries_a_failed_escalation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "admin")
        .await
        .unwrap();
    let mm = fleetprompt_system_tests::Recorder::start().await;
    mm.script("/hooks/x", [fleetprompt_system_tests::Reply::status(400)]);
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            serde_json::json!({ "name": "team", "kind": "mattermost", "webhook_url": format!("{}/hooks/x", mm.url) }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (conv, _, _) = conversation(&app).await;
    let b = signed_in(&app, &ann).await;
    let page = b.get(&format!("/console/conversations/{conv}")).await;
    let esc = page
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/escalate"))
        .unwrap();
    assert!(page.body.contains("Escalate to Mattermost"));
    let r = b.submit(&esc, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let failed = wait_until(
        "the failed escalation",
        Duration::from_secs(15),
        async || {
            // The attempt's badge may show before the directive itself
            // is marked failed (and offers Retry): wait for both.
            let p = b.get(&format!("/console/conversations/{conv}")).await;
            let retryable = p.forms().iter().any(|f| f.action.ends_with("/retry"));
            (p.body.contains("s-failed\">failed") && retryable).then_some(p)
        },
    )
    .await;
    assert!(
        failed.body.contains("The destination refused the request")
            || failed.body.contains("It failed"),
        "{}",
        failed.body
    );
    let retry = failed
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/retry"))
        .expect("a Retry button for the admin");
    let r = b.submit(&retry, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    wait_until(
        "the retried escalation",
        Duration::from_secs(15),
        async || {
            let e = timeline(&app, &conv).await;
            let d = directives_of(&e, "webchat.escalate_to_mattermost");
            (d.len() == 1 && d[0]["status"] == "succeeded").then_some(())
        },
    )
    .await;
    assert_eq!(
        mm.received("/hooks/x").len(),
        2,
        "one refused post, one delivered"
    );
}

/// The FAQ the drafts come from (several entries, so that a question is
/// matched against the others too).
const FAQ: &str = r#"
[[faq]]
question = "What are your opening hours?"
answer = "We are open from 9:00 to 17:00."

[[faq]]
question = "How do I reset my password?"
answer = "Use the 'Forgot password' link on the sign-in page."

[[faq]]
question = "Do you ship internationally?"
answer = "Yes, we ship to 30 countries."
"#;

/// FAQ drafts on the conversation page: approve one as it is, send
/// another edited (the operator's words go, the draft is set aside),
/// discard a third; a discarded draft never reaches the visitor.
async fn drafts_are_approved_edited_or_discarded(backend: Backend) {
    let app = fleetprompt_system_tests::webchat::spawn_with_rules(backend, &[], |dir| {
        std::fs::create_dir_all(dir.join("tenants/acme/knowledge")).unwrap();
        std::fs::copy(
            fleetprompt_system_tests::webchat::SHIPPED_RULES,
            dir.join("website_chat.toml"),
        )
        .unwrap();
        std::fs::write(dir.join("tenants/acme/knowledge/faq.toml"), FAQ).unwrap();
    })
    .await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "admin")
        .await
        .unwrap();
    let site = site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let b = signed_in(&app, &ann).await;
    let mut outcomes = Vec::new();
    for (how, edit) in [
        ("send", None),
        ("send", Some("We open at nine.")),
        ("discard", None),
    ] {
        let token = visitor(&app, &key).await;
        let conv = say(&app, &token, "when are you open on mondays?").await;
        let page = wait_until("a draft on the page", Duration::from_secs(15), async || {
            let p = b.get(&format!("/console/conversations/{conv}")).await;
            p.body.contains("Approve and send").then_some(p)
        })
        .await;
        assert!(page.body.contains("9:00 to 17:00"), "{}", page.body);
        let form = page
            .forms()
            .into_iter()
            .find(|f| f.action.ends_with("/send"))
            .unwrap();
        let r = if how == "discard" {
            let mut f = form.clone();
            f.action = f.action.replace("/send", "/discard");
            b.submit(&f, &[]).await
        } else {
            match edit {
                Some(text) => b.submit(&form, &[("content", text)]).await,
                None => b.submit(&form, &[]).await,
            }
        };
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert!(
            !b.get(&format!("/console/conversations/{conv}"))
                .await
                .body
                .contains("Approve and send"),
            "the draft is no longer pending"
        );
        outcomes.push((conv, token));
    }
    let replies = async |token: &str, n: usize| {
        wait_until(
            "the visitor's history",
            Duration::from_secs(10),
            async || {
                let h = history(&app, token).await;
                let agent: Vec<String> = h["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["role"] != "visitor")
                    .map(|m| m["content"].as_str().unwrap().to_owned())
                    .collect();
                (agent.len() == n).then_some(agent)
            },
        )
        .await
    };
    assert_eq!(
        replies(&outcomes[0].1, 1).await,
        ["We are open from 9:00 to 17:00."]
    );
    assert_eq!(replies(&outcomes[1].1, 1).await, ["We open at nine."]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(replies(&outcomes[2].1, 0).await.is_empty());
    let e = timeline(&app, &outcomes[2].0).await;
    assert_eq!(signals_of(&e, "webchat.draft.discarded").len(), 1);
}

/// The inbox shows 50 conversations, newest activity first, and links
/// the older ones; every conversation is on exactly one page.
async fn the_inbox_pages_through_older_conversations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "admin")
        .await
        .unwrap();
    let site = site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let mut convs = Vec::new();
    for i in 0..55 {
        let token = visitor(&app, &key).await;
        convs.push(say(&app, &token, &format!("question number {i}")).await);
    }
    let b = signed_in(&app, &ann).await;
    let ids = |p: &Page| -> Vec<String> {
        p.body
            .split("data-id=\"")
            .skip(1)
            .map(|x| x.split('"').next().unwrap().to_owned())
            .collect()
    };
    let first = b.get("/console/conversations").await;
    let page1 = ids(&first);
    assert_eq!(page1.len(), 50);
    assert_eq!(page1[0], convs[54], "newest first");
    let older = first
        .body
        .split("href=\"")
        .find(|x| x.starts_with("/console/conversations?") && x.contains("after="))
        .and_then(|x| x.split('"').next())
        .expect("a link to older conversations")
        .replace("&amp;", "&");
    let second = b.get(&older).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let page2 = ids(&second);
    assert_eq!(page2.len(), 5, "{page2:?}");
    let mut all: Vec<String> = page1.into_iter().chain(page2).collect();
    all.sort();
    let mut want = convs.clone();
    want.sort();
    assert_eq!(all, want);
    assert!(!second.body.contains("after="), "no page after the last");
}

/// The tenant's FAQ answers are saved replies: choosing one fills the reply
/// box (by the page's own GET form, so it works without script), and
/// sending it reaches the visitor; an unknown choice fills nothing.
async fn saved_replies_fill_the_reply_box(backend: Backend) {
    let app = fleetprompt_system_tests::webchat::spawn_with_rules(backend, &[], |dir| {
        std::fs::create_dir_all(dir.join("tenants/acme/knowledge")).unwrap();
        std::fs::write(dir.join("tenants/acme/knowledge/faq.toml"), FAQ).unwrap();
    })
    .await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "agent")
        .await
        .unwrap();
    let site = site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let b = signed_in(&app, &ann).await;
    let token = visitor(&app, &key).await;
    let conv = say(&app, &token, "do you ship to Norway?").await;
    let page = b.get(&format!("/console/conversations/{conv}")).await;
    assert!(page.body.contains("Saved reply"), "{}", page.body);
    assert!(page.body.contains("Do you ship internationally?"));
    assert!(!page.body.contains("30 countries.</textarea>"));
    let junk = b
        .get(&format!("/console/conversations/{conv}?insert=faq:9"))
        .await;
    assert_eq!(junk.status, StatusCode::OK);
    assert!(!junk.body.contains("30 countries.</textarea>"));
    let filled = b
        .get(&format!("/console/conversations/{conv}?insert=faq:2"))
        .await;
    assert!(
        filled
            .body
            .contains(">Yes, we ship to 30 countries.</textarea>"),
        "{}",
        filled.body
    );
    let form = filled
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/reply"))
        .unwrap();
    let r = b.submit(&form, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    wait_until(
        "the reply in the visitor's history",
        Duration::from_secs(10),
        async || {
            let h = history(&app, &token).await;
            h["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["role"] == "agent" && m["content"] == "Yes, we ship to 30 countries.")
                .then_some(())
        },
    )
    .await;
}

/// The team's own saved replies: any member adds, edits and deletes them on
/// their page; the conversation's picker lists them beside the FAQ, and
/// choosing one fills the reply box. A taken title, an empty text or
/// another tenant's id change nothing.
async fn members_keep_their_own_saved_replies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let agent = add_member(&app.db, "acme", "ag@example.com", "Ag", "agent")
        .await
        .unwrap();
    let (conv, _, _) = conversation(&app).await;
    let b = signed_in(&app, &agent).await;
    let page = b.get("/console/saved-replies").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("No saved reply yet"));
    let add = page
        .forms()
        .into_iter()
        .find(|f| f.action == "/console/saved-replies")
        .expect("the add form");
    let r = b
        .submit(
            &add,
            &[
                ("title", "Parcel delay"),
                (
                    "content",
                    "Sorry, parcels are late this week.\nThey will arrive.",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    // The same title again is a conflict; an empty text is refused.
    let r = b
        .submit(&add, &[("title", "Parcel delay"), ("content", "other")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.content_type.starts_with("text/html"));
    let r = b
        .submit(&add, &[("title", "Empty"), ("content", "  ")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let (_, v) = app.get("/admin/v1/saved-replies").await;
    let rows = v["saved_replies"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(rows[0]["created_by"], agent.id.as_str());

    // The conversation lists it, with its text for the script to insert,
    // and the page's own form fills the reply box without script.
    let page = b.get(&format!("/console/conversations/{conv}")).await;
    assert!(
        page.body.contains(&format!("value=\"{id}\"")),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("data-text=\"Sorry, parcels are late this week.\nThey will arrive.\"")
    );
    let filled = b
        .get(&format!("/console/conversations/{conv}?insert={id}"))
        .await;
    assert!(
        filled
            .body
            .contains(">Sorry, parcels are late this week.\nThey will arrive.</textarea>"),
        "{}",
        filled.body
    );

    // Edited on its page.
    let page = b.get("/console/saved-replies").await;
    let edit = page
        .forms()
        .into_iter()
        .find(|f| f.action == format!("/console/saved-replies/{id}"))
        .expect("the edit form");
    let r = b
        .submit(
            &edit,
            &[
                ("title", "Late parcels"),
                ("content", "They are on their way."),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = b.get("/console/saved-replies").await;
    assert!(page.body.contains("Late parcels") && page.body.contains("They are on their way."));
    assert!(!page.body.contains("Parcel delay"));

    // Another tenant's member can neither see nor touch it.
    create_tenant(&app.db, "globex").await.unwrap();
    let other = add_member(&app.db, "globex", "g@example.com", "G", "admin")
        .await
        .unwrap();
    let g = signed_in(&app, &other).await;
    assert!(
        !g.get("/console/saved-replies")
            .await
            .body
            .contains("Late parcels")
    );
    let mine = g.get("/console/saved-replies").await;
    let csrf = mine.csrf().unwrap();
    let r = g
        .post(
            &format!("/console/saved-replies/{id}"),
            &[
                ("csrf_token", csrf.as_str()),
                ("title", "x"),
                ("content", "y"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = g
        .post(
            &format!("/console/saved-replies/{id}/delete"),
            &[("csrf_token", csrf.as_str())],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // Deleted by its tenant.
    let page = b.get("/console/saved-replies").await;
    let del = page
        .forms()
        .into_iter()
        .find(|f| f.action == format!("/console/saved-replies/{id}/delete"))
        .expect("the delete form");
    let r = b.submit(&del, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let (_, v) = app.get("/admin/v1/saved-replies").await;
    assert_eq!(v["saved_replies"].as_array().unwrap().len(), 0, "{v}");
    let page = b.get(&format!("/console/conversations/{conv}")).await;
    assert!(!page.body.contains("They are on their way."));
}

/// On a site that hides who its visitors are, the inbox search does not
/// match their email or name (it would confirm what the page masks), but
/// still finds their words; where the site shows them, it matches both.
async fn search_keeps_hidden_visitor_details_hidden(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "agent")
        .await
        .unwrap();
    let hidden = fleetprompt_system_tests::webchat::site_with(
        &app,
        serde_json::json!({
            "domains": ["shop.example.com"],
            "mode": "native",
            "settings": { "show_visitor_details": false }
        }),
    )
    .await;
    let shown = fleetprompt_system_tests::webchat::site_with(
        &app,
        serde_json::json!({ "domains": ["blog.example.com"], "mode": "native" }),
    )
    .await;
    let mut convs = Vec::new();
    for (s, origin, email) in [
        (&hidden, ORIGIN, "secret.person@example.org"),
        (
            &shown,
            "https://blog.example.com",
            "open.person@example.org",
        ),
    ] {
        let key = s["public_key"].as_str().unwrap();
        let token = visitor_from(&app, origin, key).await;
        convs.push(say_from(&app, origin, &token, "kumquat order").await);
        let r = app
            .http
            .post(format!("{}/v1/widget/contact", app.server.url))
            .header("origin", origin)
            .bearer_auth(&token)
            .json(&serde_json::json!({ "email": email, "name": email.split('@').next().unwrap() }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let b = signed_in(&app, &ann).await;
    wait_until(
        "both visitors' emails stored",
        Duration::from_secs(10),
        async || {
            b.get("/console/conversations?q=open.person")
                .await
                .body
                .contains(&convs[1])
                .then_some(())
        },
    )
    .await;
    // Give the hidden site's contact the same time to land, then search.
    wait_until(
        "the hidden visitor's contact captured",
        Duration::from_secs(10),
        async || {
            (!signals_of(&timeline(&app, &convs[0]).await, "webchat.contact.captured").is_empty())
                .then_some(())
        },
    )
    .await;
    for q in [
        "secret.person",
        "secret.person%40example.org",
        "example.org",
    ] {
        let page = b.get(&format!("/console/conversations?q={q}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains(&convs[0]), "{q} matched a hidden email");
    }
    assert!(
        b.get("/console/conversations?q=example.org")
            .await
            .body
            .contains(&convs[1])
    );
    let words = b.get("/console/conversations?q=kumquat").await;
    assert!(words.body.contains(&convs[0]) && words.body.contains(&convs[1]));
    assert!(
        !words.body.contains("secret.person"),
        "the email is masked in the list"
    );
}

/// A long conversation's page shows its newest messages and the timeline
/// of the same stretch of time, and links the stretch before it; every
/// message is on exactly one stretch.
async fn a_long_conversation_pages_through_its_history(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "agent")
        .await
        .unwrap();
    let site = fleetprompt_system_tests::webchat::site_with(
        &app,
        serde_json::json!({
            "domains": ["shop.example.com"],
            "mode": "native",
            "settings": { "rate_limit_visitor_per_min": 1000, "rate_limit_address_per_min": 1000 }
        }),
    )
    .await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let mut conv = String::new();
    for i in 0..60 {
        conv = say(&app, &token, &format!("line-{i:02}-end")).await;
    }
    let b = signed_in(&app, &ann).await;
    let lines = |p: &Page| -> Vec<String> {
        p.body
            .split("<p>line-")
            .skip(1)
            .map(|x| x[..2].to_owned())
            .collect()
    };
    let newest = b.get(&format!("/console/conversations/{conv}")).await;
    assert_eq!(newest.status, StatusCode::OK);
    let shown = lines(&newest);
    assert_eq!(shown.len(), 50, "{shown:?}");
    assert_eq!(shown.first().map(String::as_str), Some("10"));
    assert_eq!(shown.last().map(String::as_str), Some("59"));
    // The timeline beside them holds their signals, not the older ones'.
    assert!(newest.body.contains("“line-10-end”"));
    assert!(!newest.body.contains("“line-09-end”"));
    let earlier = newest
        .body
        .split("href=\"")
        .find(|x| x.contains("?before="))
        .and_then(|x| x.split('"').next())
        .expect("a link to earlier messages")
        .to_owned();
    let older = b.get(&earlier).await;
    assert_eq!(older.status, StatusCode::OK, "{}", older.body);
    let shown = lines(&older);
    assert_eq!(
        shown,
        (0..10).map(|i| format!("{i:02}")).collect::<Vec<_>>()
    );
    assert!(older.body.contains("“line-09-end”") && older.body.contains("webchat.session.started"));
    assert!(!older.body.contains("“line-10-end”"));
    assert!(!older.body.contains("?before="), "nothing before the first");
    assert!(older.body.contains("Newest messages"));
    let bad = b
        .get(&format!("/console/conversations/{conv}?before=nonsense"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// Unread marks are each member's own: opening a conversation clears its
/// mark for that member alone, the visitor's next message sets it again,
/// and an answer clears it for everyone.
async fn unread_marks_are_each_members_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = add_member(&app.db, "acme", "ann@example.com", "Ann", "agent")
        .await
        .unwrap();
    let bob = add_member(&app.db, "acme", "bob@example.com", "Bob", "agent")
        .await
        .unwrap();
    let (conv, _, token) = conversation(&app).await;
    let a = signed_in(&app, &ann).await;
    let b = signed_in(&app, &bob).await;
    let unread_for = async |who: &Browser| {
        let p = who.get("/console/conversations").await;
        assert!(
            p.body.contains(&format!("data-id=\"{conv}\"")),
            "{}",
            p.body
        );
        p.body
            .contains(&format!("<li class=\"unread\" data-id=\"{conv}\""))
    };
    assert!(unread_for(&a).await && unread_for(&b).await);
    assert_eq!(
        a.get(&format!("/console/conversations/{conv}"))
            .await
            .status,
        StatusCode::OK
    );
    assert!(!unread_for(&a).await, "read by Ann");
    assert!(unread_for(&b).await, "still unread for Bob");
    // Opening it again changes nothing; the visitor's next message does.
    a.get(&format!("/console/conversations/{conv}")).await;
    assert!(!unread_for(&a).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    say(&app, &token, "Any news?").await;
    assert!(unread_for(&a).await, "unread again after the visitor wrote");
    // Bob answers: it is nobody's to read any more.
    let page = b.get(&format!("/console/conversations/{conv}")).await;
    let form = page
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/reply"))
        .unwrap();
    let r = b.submit(&form, &[("content", "On its way.")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    wait_until(
        "the answer clears the mark",
        Duration::from_secs(10),
        async || (!unread_for(&a).await).then_some(()),
    )
    .await;
    assert!(!unread_for(&b).await);
}

both_backends!(
    unread_marks_are_each_members_own,
    members_keep_their_own_saved_replies,
    search_keeps_hidden_visitor_details_hidden,
    a_long_conversation_pages_through_its_history,
    the_inbox_pages_through_older_conversations,
    drafts_are_approved_edited_or_discarded,
    saved_replies_fill_the_reply_box,
    an_invite_sets_a_password_and_signs_in,
    the_demo_has_a_console_member,
    an_admin_retries_a_failed_escalation,
    sign_in_refuses_wrong_passwords_forged_csrf_and_throttles,
    every_console_form_checks_csrf,
    an_agent_sees_no_admin_pages_or_actions,
    tenants_are_kept_apart,
    signing_out_kills_the_session,
    errors_are_html_pages_and_the_api_keeps_json,
    notes_replies_and_the_live_feed,
);
