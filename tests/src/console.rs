//! A small browser for the console's HTML: it keeps cookies, follows no
//! redirect by itself (the tests look at each `303`), reads forms out of
//! pages, and posts them like a browser would (urlencoded).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;

/// One answer, with what a test looks at.
#[derive(Debug, Clone)]
pub struct Page {
    /// Its status.
    pub status: StatusCode,
    /// Its `Location`, if a redirect.
    pub location: Option<String>,
    /// Its `Set-Cookie` headers.
    pub set_cookies: Vec<String>,
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// Its `Content-Security-Policy`, if any.
    pub csp: Option<String>,
    /// The body.
    pub body: String,
}

impl Page {
    /// The first CSRF field's value (a hidden input named `csrf…`).
    pub fn csrf(&self) -> Option<String> {
        forms(&self.body)
            .into_iter()
            .flat_map(|f| f.fields)
            .find(|(k, _)| k.starts_with("csrf"))
            .map(|(_, v)| v)
    }

    /// The forms of the page.
    pub fn forms(&self) -> Vec<Form> {
        forms(&self.body)
    }
}

/// A form of a page: its method, action and its fields' names and values
/// (inputs and textareas; a select's selected or first option).
#[derive(Debug, Clone)]
pub struct Form {
    /// `get` or `post`.
    pub method: String,
    /// Where it posts.
    pub action: String,
    /// Its fields.
    pub fields: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every form in `html`, read the simple way the console writes them.
pub fn forms(html: &str) -> Vec<Form> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<form") {
        let after = &rest[i..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let end = after.find("</form>").unwrap_or(after.len());
        let inner = &after[tag_end..end];
        let mut fields = Vec::new();
        let mut r = inner;
        while let Some(j) = r.find('<') {
            r = &r[j..];
            let Some(e) = r.find('>') else { break };
            let t = &r[..e];
            if t.starts_with("<input") {
                let kind = attr(t, "type").unwrap_or_default();
                if let Some(n) = attr(t, "name")
                    && (kind != "checkbox" || t.contains(" checked"))
                {
                    fields.push((n, attr(t, "value").unwrap_or_default()));
                }
            } else if t.starts_with("<textarea") {
                if let Some(n) = attr(t, "name") {
                    let close = r.find("</textarea>").unwrap_or(e);
                    fields.push((n, unescape(&r[e + 1..close])));
                }
            } else if t.starts_with("<select")
                && let Some(n) = attr(t, "name")
            {
                let close = r.find("</select>").unwrap_or(r.len());
                let opts = &r[e..close];
                let pick = opts
                    .split("<option")
                    .skip(1)
                    .find(|o| o.contains(" selected"))
                    .or_else(|| opts.split("<option").nth(1));
                let v = pick.and_then(|o| attr(o, "value")).unwrap_or_default();
                fields.push((n, v));
            }
            r = &r[e..];
        }
        out.push(Form {
            method: attr(tag, "method").unwrap_or_else(|| "get".into()),
            action: attr(tag, "action").unwrap_or_default(),
            fields,
        });
        rest = &after[end.min(after.len())..];
        if end == after.len() {
            break;
        }
    }
    out
}

/// A browser: cookies by name, no automatic redirects.
pub struct Browser {
    /// The server's base URL.
    pub base: String,
    http: reqwest::Client,
    cookies: Mutex<HashMap<String, String>>,
}

impl Browser {
    /// A browser with no cookies.
    pub fn new(base: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            cookies: Mutex::new(HashMap::new()),
        }
    }

    /// The `Cookie` header this browser sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    /// Sets (or, with `None`, drops) a cookie by hand.
    pub fn set_cookie(&self, name: &str, value: Option<&str>) {
        let mut c = self.cookies.lock().unwrap();
        match value {
            Some(v) => c.insert(name.to_owned(), v.to_owned()),
            None => c.remove(name),
        };
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self.cookie_header();
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        let r = req.send().await.expect("console request");
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let set_cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for c in &set_cookies {
            // This browser keeps cookies by name; one for another path
            // (the clearing of an earlier release's `Path=/admin` session
            // cookie) is not one it would send to the console.
            if c.contains("Path=/admin") {
                continue;
            }
            let kv = c.split(';').next().unwrap_or_default();
            if let Some((k, v)) = kv.split_once('=') {
                let gone = c.contains("Max-Age=0") || v.is_empty();
                self.set_cookie(k.trim(), (!gone).then_some(v.trim()));
            }
        }
        Page {
            status: StatusCode::from_u16(r.status().as_u16()).unwrap(),
            location: h("location"),
            content_type: h("content-type").unwrap_or_default(),
            retry_after: h("retry-after"),
            csp: h("content-security-policy"),
            set_cookies,
            body: r.text().await.unwrap_or_default(),
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// POST a form to `path`.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded_pairs(fields);
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// Submits `form` as it is, with `changes` applied (a field given
    /// replaces the form's; new ones are added).
    pub async fn submit(&self, form: &Form, changes: &[(&str, &str)]) -> Page {
        let mut fields: Vec<(String, String)> = form.fields.clone();
        for (k, v) in changes {
            match fields.iter_mut().find(|(n, _)| n == k) {
                Some(f) => f.1 = (*v).to_owned(),
                None => fields.push(((*k).to_owned(), (*v).to_owned())),
            }
        }
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.post(&form.action, &pairs).await
    }

    /// Signs in through the form; the answer to the form's post.
    pub async fn sign_in(&self, email: &str, password: &str) -> Page {
        let login = self.get("/console/login").await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        let csrf = login.csrf().expect("the sign-in form's csrf field");
        self.post(
            "/console/login",
            &[
                ("csrf_token", &csrf),
                ("email", email),
                ("password", password),
            ],
        )
        .await
    }
}

/// `a=b&c=d`, percent-encoded as a form is.
fn serde_urlencoded_pairs(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut o = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    o.push(b as char)
                }
                b' ' => o.push('+'),
                _ => o.push_str(&format!("%{b:02X}")),
            }
        }
        o
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
