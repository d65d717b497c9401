//! A workflow definition drawn as an SVG graph: one box per step in
//! definition order, an arrow down to the step that follows, curved arrows
//! on the right for condition branches, `next` jumps and `on_error` gotos.
//! Drawn on the server: it shows without JavaScript.

use maud::{Markup, html};

use crate::action::Next;
use crate::engine::definition::{Definition, OnError};

const X: i64 = 16;
const W: i64 = 300;
const H: i64 = 40;
const GAP: i64 = 26;

/// One arrow: from a step to a step, or (`None`) to the end.
#[derive(Debug, PartialEq)]
pub struct Edge {
    /// From this step.
    pub from: usize,
    /// To this step; `None` ends the execution.
    pub to: Option<usize>,
    /// `then`, `else`, `next`, `on error`, or empty for the following step.
    pub label: &'static str,
}

/// Every arrow of `def`.
pub fn edges(def: &Definition) -> Vec<Edge> {
    let index = |id: &str| def.steps.iter().position(|s| s.id == id);
    let mut out = Vec::new();
    for (i, step) in def.steps.iter().enumerate() {
        let following = || match &step.next {
            Some(n) => (index(n), "next"),
            None => ((i + 1 < def.steps.len()).then_some(i + 1), ""),
        };
        let exits = step.action.exits();
        let labels = ["then", "else"];
        for (k, exit) in exits.iter().enumerate() {
            let branch = exits.len() > 1;
            let (to, label) = match exit {
                Next::Following => following(),
                Next::Step(id) => (index(id), ""),
                Next::End => (None, ""),
            };
            let label = if branch { labels[k.min(1)] } else { label };
            out.push(Edge { from: i, to, label });
        }
        if let OnError::Goto(t) = &step.on_error {
            out.push(Edge {
                from: i,
                to: index(t),
                label: "on error",
            });
        }
    }
    out
}

fn top(i: usize) -> i64 {
    GAP + i as i64 * (H + GAP)
}

/// The graph of `def`.
pub fn svg(def: &Definition) -> Markup {
    let n = def.steps.len();
    let end_y = top(n);
    let edges = edges(def);
    // Each arrow that is not straight down gets its own lane on the right.
    let mut jumps = 0i64;
    let down = |e: &Edge| e.label.is_empty() && e.to.unwrap_or(n) == e.from + 1;
    let lanes: Vec<Option<i64>> = edges
        .iter()
        .map(|e| {
            (!down(e)).then(|| {
                jumps += 1;
                X + W + 14 + 26 * ((jumps - 1) % 12)
            })
        })
        .collect();
    let width = X + W + 60 + 26 * jumps.min(12);
    let height = end_y + H;
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (width) " " (height)} width=(width)
            role="img" aria-label="Workflow graph" {
            defs { marker #arrow viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                path.head d="M0,0 L10,5 L0,10 z" {}
            } }
            @for (e, lane) in edges.iter().zip(&lanes) {
                @let from_y = top(e.from) + H;
                @let to_y = e.to.map_or(end_y, top);
                @if let Some(out_x) = *lane {
                    @let class = if e.label == "on error" { "error" } else { "branch" };
                    path class=(class) d={"M" (X + W) "," (from_y - H / 2) " C" (out_x) "," (from_y - H / 2) " " (out_x) "," (to_y + H / 2) " " (X + W) "," (to_y + H / 2)} marker-end="url(#arrow)" {}
                    text x=(out_x - 4) y=((from_y - H / 2 + to_y + H / 2) / 2) { (e.label) }
                } @else {
                    path d={"M" (X + W / 2) "," (from_y) " L" (X + W / 2) "," (to_y)} marker-end="url(#arrow)" {}
                }
            }
            @for (i, s) in def.steps.iter().enumerate() {
                @let kind = s.action.kind();
                g {
                    title { (s.id) " (" (kind) ")" }
                    rect class=(kind) x=(X) y=(top(i)) width=(W) height=(H) rx="5" {}
                    text.id x=(X + 10) y=(top(i) + 17) { (super::page::clip(&s.id, 34)) }
                    text.kind x=(X + 10) y=(top(i) + 32) { (kind) }
                }
            }
            rect.terminal x=(X + W / 2 - 30) y=(end_y) width="60" height="24" rx="12" {}
            text x=(X + W / 2 - 12) y=(end_y + 16) { "end" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn branches_jumps_and_gotos_become_arrows() {
        let def = Definition::parse(&json!({"steps": [
            {"id": "hello", "type": "send_email", "subject": "s", "body": "b", "on_error": {"goto": "done"}},
            {"id": "pro?", "type": "condition", "if": {"tag": "pro"}, "then": "upsell", "else": "done"},
            {"id": "upsell", "type": "send_sms", "body": "x", "next": "done"},
            {"id": "skipped", "type": "wait", "duration": "1h"},
            {"id": "done", "type": "end"}
        ]}))
        .unwrap();
        let e = edges(&def);
        let has = |from, to: Option<usize>, label| e.contains(&Edge { from, to, label });
        assert!(has(0, Some(1), ""), "{e:?}");
        assert!(has(0, Some(4), "on error"), "{e:?}");
        assert!(has(1, Some(2), "then"), "{e:?}");
        assert!(has(1, Some(4), "else"), "{e:?}");
        assert!(has(2, Some(4), "next"), "{e:?}");
        assert!(has(3, Some(4), ""), "{e:?}");
        assert!(has(4, None, ""), "{e:?}");
        assert_eq!(e.len(), 7, "{e:?}");
        let svg = svg(&def).0;
        assert_eq!(
            svg.matches("<rect class=").count(),
            5 + 1,
            "a box per step and the end"
        );
        assert!(svg.contains(">else<") && svg.contains(">on error<"));
    }
}
