//! The run as a picture: per query each engine's median (bars scaled to
//! the slowest engine of that query, so each query reads on its own),
//! ingest and load rates, and memory; Atoll's bars highlighted. Plain SVG
//! text, so that `docs/benchmarks.md` can show it without any tool.

/// One group of bars: its label, and per engine a value and how to say it.
pub struct Group {
    pub label: String,
    pub bars: Vec<(String, f64, String)>,
}

const WIDTH: f64 = 760.0;
const LABEL: f64 = 210.0;
const BAR: f64 = 14.0;
const GAP: f64 = 10.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart: a title, then each group's bars under its label.
pub fn chart(title: &str, groups: &[Group]) -> String {
    let mut y = 34.0;
    let mut body = String::new();
    for g in groups {
        body.push_str(&format!(
            "<text x=\"8\" y=\"{:.0}\" font-weight=\"bold\">{}</text>\n",
            y + 10.0,
            escape(&g.label)
        ));
        y += 16.0;
        let max = g
            .bars
            .iter()
            .map(|b| b.1)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        for (engine, value, said) in &g.bars {
            let w = if max > 0.0 && value.is_finite() {
                (value / max) * (WIDTH - LABEL - 90.0)
            } else {
                0.0
            };
            let atoll = engine.starts_with("Atoll");
            let fill = if atoll { "#f28e2b" } else { "#8da0b6" };
            body.push_str(&format!(
                "<text x=\"16\" y=\"{:.0}\"{}>{}</text><rect x=\"{LABEL}\" y=\"{:.0}\" width=\"{w:.1}\" height=\"{:.0}\" fill=\"{fill}\"/><text x=\"{:.1}\" y=\"{:.0}\">{}</text>\n",
                y + BAR - 3.0,
                if atoll { " font-weight=\"bold\"" } else { "" },
                escape(engine),
                y,
                BAR - 2.0,
                LABEL + w + 4.0,
                y + BAR - 3.0,
                escape(said)
            ));
            y += BAR;
        }
        y += GAP;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n<text x=\"8\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>\n{body}</svg>\n",
        y + 8.0,
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_slowest_and_atoll_stands_out() {
        let svg = chart(
            "Q <1>",
            &[Group {
                label: "Q1".into(),
                bars: vec![
                    ("Atoll".into(), 2.0, "2 ms".into()),
                    ("DuckDB".into(), 4.0, "4 ms".into()),
                ],
            }],
        );
        assert!(svg.contains("Q &lt;1&gt;"));
        assert!(svg.contains("fill=\"#f28e2b\""));
        let full = format!("width=\"{:.1}\"", WIDTH - LABEL - 90.0);
        let half = format!("width=\"{:.1}\"", (WIDTH - LABEL - 90.0) / 2.0);
        assert!(svg.contains(&full) && svg.contains(&half), "{svg}");
    }
}
