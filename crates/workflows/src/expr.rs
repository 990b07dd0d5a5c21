//! CEL conditions (`when`): compiled once at load time, checked for
//! identifiers outside the fixed context, evaluated per signal against
//! values converted once per routed signal.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program};

/// Identifiers CEL resolves by itself (type names used as `type(x) == int`),
/// which are therefore never "undefined variables".
const CEL_BUILTIN_IDENTS: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
];

/// The environment every condition is compiled and run with: the standard
/// library plus the string extension (`lowerAscii`, `split`, ...).
pub(crate) fn cel_env() -> Arc<Env> {
    let mut env = Env::stdlib();
    // The extension only registers functions; failure would be a bug in the
    // cel crate, and a condition using them then fails with a clear
    // "undeclared function" at run time rather than taking the loader down.
    let _ = env.add_extension(cel::extensions::strings);
    Arc::new(env)
}

/// A compiled condition and its source, kept for messages.
#[derive(Debug)]
pub(crate) struct Condition {
    pub(crate) source: String,
    program: Program,
}

/// Where in the expression source (byte offset; `None` for the value as a
/// whole) and what went wrong.
pub(crate) struct ExprProblem {
    pub(crate) offset: Option<usize>,
    pub(crate) message: String,
}

impl Condition {
    /// Compiles `source`; on failure returns the most useful parse error.
    pub(crate) fn compile(env: &Env, source: &str) -> Result<Condition, ExprProblem> {
        match env.compile(source) {
            Ok(program) => Ok(Condition {
                source: source.to_owned(),
                program,
            }),
            Err(errors) => {
                // The ANTLR parser sometimes emits an internal "Incomplete
                // ExprContext" note before the real syntax error: prefer the
                // latter, it names the token the author has to fix.
                let best = errors
                    .errors
                    .iter()
                    .find(|e| e.msg.starts_with("Syntax error"))
                    .or_else(|| errors.errors.first());
                Err(match best {
                    Some(e) => ExprProblem {
                        offset: Some(line_col_to_offset(source, e.pos.0, e.pos.1)),
                        message: format!("invalid CEL condition: {}", e.msg),
                    },
                    None => ExprProblem {
                        offset: None,
                        message: "invalid CEL condition".to_owned(),
                    },
                })
            }
        }
    }

    /// Identifiers the condition uses that are neither in `allowed` nor bound
    /// by a macro (`list.exists(x, ...)`), with their offsets.
    pub(crate) fn undeclared(&self, allowed: &[&str]) -> Vec<ExprProblem> {
        let mut found = Vec::new();
        let mut bound = Vec::new();
        walk(self.program.expression(), &mut bound, &mut |id, name| {
            if !allowed.contains(&name) && !CEL_BUILTIN_IDENTS.contains(&name) {
                found.push((id, name.to_owned()));
            }
        });
        let info = self.program.source_info();
        let mut problems: Vec<ExprProblem> = found
            .into_iter()
            .map(|(id, name)| ExprProblem {
                offset: info
                    .offset_for(id)
                    .map(|(start, _)| char_to_byte(&self.source, start as usize)),
                message: format!(
                    "undefined variable `{name}` in condition (available: {})",
                    allowed.join(", ")
                ),
            })
            .collect();
        problems.sort_by_key(|p| p.offset);
        problems.dedup_by_key(|p| p.offset);
        problems
    }

    /// Evaluates to a boolean; anything else (including a missing key) is a
    /// message meant for the signal's timeline.
    pub(crate) fn eval(&self, env: &Arc<Env>, vars: &CelVars) -> Result<bool, String> {
        let mut ctx = Context::with_env(Arc::clone(env));
        ctx.set_variable_resolver(vars);
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition `{}` evaluated to {other:?}, expected a bool",
                self.source
            )),
            Err(e) => Err(format!("condition `{}` failed: {e}", self.source)),
        }
    }
}

/// Visits every free identifier; `bound` holds the names a comprehension
/// introduced for its body.
fn walk<'e>(expr: &'e IdedExpr, bound: &mut Vec<&'e str>, on_ident: &mut dyn FnMut(u64, &str)) {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            // `@result`-style names are the parser's own accumulators.
            if !name.starts_with('@') && !bound.contains(&name.as_str()) {
                on_ident(expr.id, name);
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound, on_ident);
            }
            for arg in &call.args {
                walk(arg, bound, on_ident);
            }
        }
        Expr::Select(select) => walk(&select.operand, bound, on_ident),
        Expr::List(list) => {
            for e in &list.elements {
                walk(e, bound, on_ident);
            }
        }
        Expr::Map(map) => walk_entries(&map.entries, bound, on_ident),
        Expr::Struct(st) => walk_entries(&st.entries, bound, on_ident),
        Expr::Comprehension(comp) => {
            walk(&comp.iter_range, bound, on_ident);
            walk(&comp.accu_init, bound, on_ident);
            let before = bound.len();
            bound.push(&comp.iter_var);
            if let Some(v2) = &comp.iter_var2 {
                bound.push(v2);
            }
            bound.push(&comp.accu_var);
            walk(&comp.loop_cond, bound, on_ident);
            walk(&comp.loop_step, bound, on_ident);
            walk(&comp.result, bound, on_ident);
            bound.truncate(before);
        }
    }
}

fn walk_entries<'e>(
    entries: &'e [cel::common::ast::IdedEntryExpr],
    bound: &mut Vec<&'e str>,
    on_ident: &mut dyn FnMut(u64, &str),
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::StructField(field) => walk(&field.value, bound, on_ident),
            EntryExpr::MapEntry(e) => {
                walk(&e.key, bound, on_ident);
                walk(&e.value, bound, on_ident);
            }
        }
    }
}

/// The CEL parser reports 1-based line and column (in characters).
fn line_col_to_offset(source: &str, line: isize, col: isize) -> usize {
    let line = usize::try_from(line.max(1)).unwrap_or(1);
    let col = usize::try_from(col.max(1)).unwrap_or(1);
    let line_start: usize = source
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    let rest = source.get(line_start..).unwrap_or("");
    line_start + char_to_byte(rest, col - 1)
}

fn char_to_byte(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i)
}

/// The variables of one evaluation, converted to CEL once and looked up by
/// name without copying.
pub(crate) struct CelVars {
    vars: Vec<(&'static str, Box<dyn Val>)>,
}

impl CelVars {
    pub(crate) fn new() -> Self {
        CelVars { vars: Vec::new() }
    }

    pub(crate) fn set(&mut self, name: &'static str, value: &serde_json::Value) {
        // Conversion from a plain CEL value only fails for function values,
        // which JSON cannot produce; fall back to null to stay total.
        let converted: Result<Box<dyn Val>, _> = json_to_cel(value).try_into();
        let val = converted.unwrap_or_else(|_| Box::new(cel::common::types::CelNull));
        self.vars.retain(|(n, _)| *n != name);
        self.vars.push((name, val));
    }
}

impl VariableResolver for CelVars {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        self.vars
            .iter()
            .find(|(n, _)| *n == variable)
            .map(|(_, v)| CowVal::Borrowed(v.as_ref()))
    }
}

/// JSON numbers become CEL `int` when integral (so `count > 3` works),
/// `uint` only past `i64::MAX`, `double` otherwise.
pub(crate) fn json_to_cel(value: &serde_json::Value) -> cel::Value {
    use serde_json::Value as J;
    match value {
        J::Null => cel::Value::Null,
        J::Bool(b) => cel::Value::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => cel::Value::String(Arc::new(s.clone())),
        J::Array(items) => cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        J::Object(map) => {
            let converted: HashMap<String, cel::Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            cel::Value::from(converted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(signal: serde_json::Value) -> CelVars {
        let mut v = CelVars::new();
        v.set("signal", &signal);
        v.set("tenant", &json!("acme"));
        v
    }

    #[test]
    fn evaluates_against_json_context() {
        let env = cel_env();
        let c = Condition::compile(&env, "signal.payload.n > 2 && tenant == 'acme'")
            .unwrap_or_else(|p| panic!("{}", p.message));
        assert_eq!(c.eval(&env, &vars(json!({"payload": {"n": 3}}))), Ok(true));
        assert_eq!(c.eval(&env, &vars(json!({"payload": {"n": 1}}))), Ok(false));
        let err = c.eval(&env, &vars(json!({"payload": {}})));
        assert!(
            matches!(&err, Err(m) if m.contains("No such key: n")),
            "{err:?}"
        );
    }

    #[test]
    fn comprehension_variables_are_not_undeclared() {
        let env = cel_env();
        let c = Condition::compile(&env, "signal.payload.items.exists(x, x > 1) && bogus")
            .unwrap_or_else(|p| panic!("{}", p.message));
        let problems = c.undeclared(&["signal"]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].offset, Some(41));
        assert!(problems[0].message.contains("`bogus`"));
    }

    #[test]
    fn parse_error_offset_is_in_expression() {
        let env = cel_env();
        let Err(p) = Condition::compile(&env, "a &&\n  (b") else {
            panic!("should not compile");
        };
        // Line 2, column 5 -> byte 5 + 4.
        assert_eq!(p.offset, Some(9));
    }
}
