//! minijinja templates for dedupe keys, args, throttle keys and emitted
//! signals: compiled once into one shared environment at load time,
//! rendered per directive.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

use crate::expr::ExprProblem;

/// Every template of a rule set, compiled into one environment.
pub(crate) struct Templates {
    env: Environment<'static>,
    next: usize,
}

/// A compiled template. Text without any `{{`/`{%`/`{#` is kept as a plain
/// string: most args are constants and need no engine round trip.
#[derive(Debug, Clone)]
pub(crate) enum Template {
    Literal(String),
    Compiled { name: String, source: String },
}

impl Templates {
    pub(crate) fn new() -> Self {
        let mut env = Environment::new();
        // Printing a missing value must fail loudly (a dedupe key silently
        // rendered as "webchat::" would merge unrelated work), while
        // `{% if signal.payload.x %}` stays usable as a presence test.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        // Output goes into JSON args and keys, never into HTML.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Spans on errors let check-time and run-time messages name the
        // exact expression that failed.
        env.set_debug(true);
        env.add_filter("truncate", truncate);
        Templates { env, next: 0 }
    }

    /// Compiles `source`, rejecting syntax errors and any top-level name
    /// outside `allowed` (or the environment's own globals like `range`).
    pub(crate) fn compile(
        &mut self,
        source: &str,
        allowed: &[&str],
    ) -> Result<Template, Vec<ExprProblem>> {
        if !["{{", "{%", "{#"].iter().any(|m| source.contains(m)) {
            return Ok(Template::Literal(source.to_owned()));
        }
        let name = format!("t{}", self.next);
        self.next += 1;
        if let Err(e) = self.env.add_template_owned(name.clone(), source.to_owned()) {
            let offset = e
                .range()
                .map(|r| r.start)
                .or_else(|| e.line().map(|l| line_start(source, l)));
            let detail = e.detail().unwrap_or("syntax error");
            return Err(vec![ExprProblem {
                offset,
                message: format!("invalid template: {detail}"),
            }]);
        }
        let tmpl = self.env.get_template(&name).map_err(|e| {
            vec![ExprProblem {
                offset: None,
                message: format!("invalid template: {e}"),
            }]
        })?;
        let globals: Vec<String> = self.env.globals().map(|(k, _)| k.to_owned()).collect();
        let mut problems: Vec<ExprProblem> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !allowed.contains(&v.as_str()) && !globals.contains(v))
            .map(|v| ExprProblem {
                offset: find_identifier(source, &v),
                message: format!(
                    "undefined variable `{v}` in template (available: {})",
                    allowed.join(", ")
                ),
            })
            .collect();
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.offset);
            return Err(problems);
        }
        Ok(Template::Compiled {
            name,
            source: source.to_owned(),
        })
    }

    pub(crate) fn render(&self, template: &Template, ctx: &Value) -> Result<String, String> {
        match template {
            Template::Literal(s) => Ok(s.clone()),
            Template::Compiled { name, source } => self
                .env
                .get_template(name)
                .and_then(|t| t.render(ctx))
                .map_err(|e| render_error(source, &e)),
        }
    }
}

fn render_error(source: &str, e: &minijinja::Error) -> String {
    let what = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let at = e
        .range()
        .and_then(|r| source.get(r))
        .map(|s| format!(" at `{s}`"))
        .unwrap_or_default();
    format!("template `{source}` failed{at}: {what}")
}

fn line_start(source: &str, line: usize) -> usize {
    source
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

/// minijinja reports undeclared names without positions: point at the
/// first whole-word use inside a tag, or the value as a whole.
fn find_identifier(source: &str, name: &str) -> Option<usize> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = source.get(from..).and_then(|s| s.find(name)) {
        let at = from + pos;
        let before = source[..at].chars().next_back();
        let after = source[at + name.len()..].chars().next();
        let inside_tag = source[..at].rfind(['{']).is_some();
        if inside_tag
            && !before.is_some_and(|c| is_word(c) || c == '.')
            && !after.is_some_and(is_word)
        {
            return Some(at);
        }
        from = at + name.len();
    }
    None
}

/// Jinja2's `truncate(length=255, killwords=false, end="...", leeway=5)`:
/// strings within `length + leeway` characters are kept whole; longer ones
/// are cut to `length` characters including `end`, at a word boundary
/// unless `killwords`.
fn truncate(
    s: String,
    length: Option<usize>,
    killwords: Option<bool>,
    end: Option<String>,
    leeway: Option<usize>,
) -> Result<String, minijinja::Error> {
    let length = length.unwrap_or(255);
    let end = end.unwrap_or_else(|| "...".to_owned());
    let leeway = leeway.unwrap_or(5);
    let end_len = end.chars().count();
    if length < end_len {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("truncate: length {length} is shorter than the end marker {end:?}"),
        ));
    }
    if s.chars().count() <= length + leeway {
        return Ok(s);
    }
    let keep: String = s.chars().take(length - end_len).collect();
    let kept = if killwords.unwrap_or(false) {
        keep.as_str()
    } else {
        keep.rsplit_once(' ')
            .map_or(keep.as_str(), |(head, _)| head)
    };
    Ok(format!("{kept}{end}"))
}

/// JSON to a template value, converted once per routed signal.
pub(crate) fn json_to_jinja(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::from(items.iter().map(json_to_jinja).collect::<Vec<_>>()),
        J::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_jinja(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: serde_json::Value) -> Value {
        json_to_jinja(&v)
    }

    #[test]
    fn truncate_follows_jinja() {
        let mut t = Templates::new();
        let tpl = t
            .compile(
                "{{ s | truncate(9) }}|{{ s | truncate(9, true) }}|{{ short | truncate(9) }}",
                &["s", "short"],
            )
            .unwrap_or_else(|p| panic!("{}", p[0].message));
        let out = t.render(
            &tpl,
            &ctx(json!({"s": "hello big wide world", "short": "0123456789ab"})),
        );
        // 9 - len("...") = 6 chars kept: "hello " -> cut at the word boundary.
        assert_eq!(out.as_deref(), Ok("hello...|hello ...|0123456789ab"));
    }

    #[test]
    fn missing_value_is_a_render_error_but_if_and_default_work() {
        let mut t = Templates::new();
        let tpl = t
            .compile(
                "{% if p.x %}x{% endif %}{{ p.y | default('d') }}-{{ p.z }}",
                &["p"],
            )
            .unwrap_or_else(|p| panic!("{}", p[0].message));
        let err = t.render(&tpl, &ctx(json!({"p": {}})));
        assert!(matches!(&err, Err(m) if m.contains("at `p.z`")), "{err:?}");
        let ok = t.render(&tpl, &ctx(json!({"p": {"z": 1}})));
        assert_eq!(ok.as_deref(), Ok("d-1"));
    }

    #[test]
    fn undeclared_names_are_found_with_offsets() {
        let mut t = Templates::new();
        let Err(p) = t.compile(
            "{{ signal.id }}:{{ sigma.id }}:{{ range(2) | length }}",
            &["signal"],
        ) else {
            panic!("should fail");
        };
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].offset, Some(19));
        assert!(p[0].message.contains("`sigma`"));
    }

    #[test]
    fn literal_text_needs_no_engine() {
        let mut t = Templates::new();
        let tpl = t
            .compile("plain", &[])
            .unwrap_or_else(|p| panic!("{}", p[0].message));
        assert!(matches!(tpl, Template::Literal(_)));
        assert_eq!(t.render(&tpl, &Value::from(())).as_deref(), Ok("plain"));
    }
}
