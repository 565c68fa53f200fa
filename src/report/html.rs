//! The posture report as one self-contained HTML page: inline CSS, the chart as inline SVG, no
//! script, no font, image or link that needs the network, so it opens the same offline, from a
//! mail attachment or an audit ticket, in any browser.
//!
//! Every value from the domain (user names, ids, reasons) is escaped; the page has no script, and
//! its `Content-Security-Policy` forbids any, so a hostile user name can do nothing but be shown.

use std::fmt::Write as _;

use crate::decision::profile::Capability;
use crate::report::posture::{
    switch, CapabilityCounts, CellState, PostureReport, Row, CREDENTIAL_TYPES,
};

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#57606a;margin:0 0 16px}.warn{background:#fff4e5;border:1px solid #e65100;padding:8px 12px;border-radius:6px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:110px}
.card .n{display:block;font-size:26px;font-weight:600}.card.change .n{color:#e65100}.card.ok .n{color:#2e7d32}
.card.exempt .n{color:#1565c0}.card.bad .n{color:#b71c1c}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}tbody tr:nth-child(even){background:#fafbfc}
td.c{text-align:center;white-space:nowrap}.s-compliant{color:#2e7d32}.s-to_change{background:#fff4e5;color:#bf360c;font-weight:600}
.s-exempt{color:#1565c0}.s-unmanaged{color:#8c959f}.s-unknown,.s-unreadable{color:#b71c1c}.s-undecided{color:#b71c1c;font-weight:600}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px;overflow-wrap:anywhere}ul.rules{margin:4px 0}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:-1px}
";

/// Chart colours: compliant, to change, exempt, unmanaged.
const COLOURS: [&str; 4] = ["#2e7d32", "#e65100", "#1565c0", "#b0b7bf"];

/// The whole page.
pub fn render(report: &PostureReport) -> String {
    let mut page = String::with_capacity(4096 + report.users.len() * 700);
    let title = format!("Capability posture: {}", report.domain);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(&title)
    );
    header(&mut page, report);
    summary(&mut page, report);
    chart(&mut page, report);
    policy(&mut page, report);
    table(&mut page, report);
    page.push_str("</body></html>\n");
    page
}

fn header(page: &mut String, r: &PostureReport) {
    let _ = writeln!(
        page,
        "<h1>Capability posture</h1><p class=\"meta\">Domain <code>{}</code> · read {} · {} · read only: nothing was changed</p>",
        esc(&r.domain),
        esc(&r.generated_at),
        match &r.filter {
            Some(f) => format!("users matching <code>{}</code>", esc(f)),
            None => "every user".to_owned(),
        }
    );
    if let Some(e) = &r.error {
        let _ = writeln!(
            page,
            "<p class=\"warn\" id=\"incomplete\"><strong>Incomplete:</strong> {}. The counts cover the users read before it.</p>",
            esc(e)
        );
    }
}

fn summary(page: &mut String, r: &PostureReport) {
    let s = &r.summary;
    page.push_str("<h2>Summary</h2><div class=\"cards\">");
    let cards = [
        ("users", "", s.users, "users"),
        ("compliant", "ok", s.compliant, "compliant"),
        ("to-change", "change", s.to_change, "to change"),
        ("exempt", "exempt", s.exempt, "exempt"),
        ("undecided", "bad", s.undecided, "undecided"),
        ("unreadable", "bad", s.unreadable, "unreadable"),
    ];
    for (id, class, n, label) in cards {
        if matches!(id, "undecided" | "unreadable") && n == 0 {
            continue;
        }
        let _ = write!(
            page,
            "<div class=\"card {class}\" id=\"summary-{id}\"><span class=\"n\">{n}</span>{label}</div>"
        );
    }
    if r.credentials_read {
        let total: u64 = s.lingering.values().sum();
        let _ = write!(
            page,
            "<div class=\"card change\" id=\"summary-lingering\"><span class=\"n\">{total}</span>lingering credentials</div>"
        );
    }
    page.push_str("</div>\n");
}

/// One stacked bar per capability, drawn as inline SVG: users compliant, to change, exempt and
/// (grey) left alone by the profile.
fn chart(page: &mut String, r: &PostureReport) {
    const LABEL: u32 = 190;
    const WIDTH: u32 = 420;
    const ROW: u32 = 30;
    let height = ROW * Capability::ALL.len() as u32 + 10;
    let total = r.summary.users.max(1);
    page.push_str("<h2>Per capability</h2><p class=\"legend\">");
    for (colour, name) in COLOURS
        .iter()
        .zip(["compliant", "to change", "exempt", "unmanaged"])
    {
        let _ = write!(page, "<span style=\"background:{colour}\"></span>{name}");
    }
    let _ = write!(
        page,
        "</p>\n<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"chart\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"Users per capability: compliant, to change, exempt, unmanaged\" \
         font-family=\"system-ui,sans-serif\" font-size=\"12\">",
        w = LABEL + WIDTH + 290
    );
    for (i, c) in Capability::ALL.iter().enumerate() {
        let counts = r
            .summary
            .capabilities
            .get(c.name())
            .copied()
            .unwrap_or_default();
        let y = i as u32 * ROW + 5;
        let _ = write!(page, "<text x=\"0\" y=\"{}\">{}</text>", y + 15, c.name());
        let _ = write!(
            page,
            "<rect x=\"{LABEL}\" y=\"{y}\" width=\"{WIDTH}\" height=\"20\" fill=\"#f0f2f4\"/>"
        );
        let mut x = u64::from(LABEL);
        for (n, colour) in segments(&counts).into_iter().zip(COLOURS) {
            let w = n * u64::from(WIDTH) / total;
            if w > 0 {
                let _ = write!(
                    page,
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"20\" fill=\"{colour}\"><title>{n}</title></rect>"
                );
            }
            x += w;
        }
        let _ = write!(
            page,
            "<text x=\"{}\" y=\"{}\" id=\"chart-{}\">{} ✓ · {} to change · {} exempt</text>",
            LABEL + WIDTH + 8,
            y + 15,
            c.name(),
            counts.compliant,
            counts.to_change,
            counts.exempt
        );
    }
    page.push_str("</svg>\n");
}

fn segments(c: &CapabilityCounts) -> [u64; 4] {
    [c.compliant, c.to_change, c.exempt, c.unmanaged]
}

fn policy(page: &mut String, r: &PostureReport) {
    let p = &r.policy;
    let _ = write!(
        page,
        "<h2>Policy applied</h2><p>From {}. Default profile: <code>{}</code> (capabilities not listed are left as the user has them).",
        esc(&p.source),
        esc(&p.default)
    );
    if let Some(ns) = &p.tag_namespace {
        let _ = write!(
            page,
            " Per-user defined tags in namespace <code>{}</code>.",
            esc(ns)
        );
    }
    page.push_str("</p>");
    if p.rules.is_empty() {
        page.push_str("<p>No rules: every user gets the default profile.</p>\n");
    } else {
        page.push_str("<p>Rules, in order (a later rule wins for the capabilities it names):</p><ul class=\"rules\">");
        for rule in &p.rules {
            let _ = write!(page, "<li><code>{}</code></li>", esc(rule));
        }
        page.push_str("</ul>\n");
    }
}

fn table(page: &mut String, r: &PostureReport) {
    page.push_str(
        "<h2>Users</h2><p class=\"meta\">To change first, then undecided (a rule the function cannot decide: it would write nothing), unreadable, exempt and compliant; by user name. \
         A cell reads <em>current → profile</em> where they differ.</p>\n<table id=\"users\"><thead><tr><th>user</th><th>status</th><th>decided by</th>",
    );
    for c in Capability::ALL {
        let _ = write!(page, "<th>{}</th>", c.name());
    }
    if r.credentials_read {
        page.push_str("<th>lingering credentials</th>");
    }
    page.push_str("<th>note</th></tr></thead><tbody>\n");
    for row in &r.users {
        table_row(page, row, r.credentials_read);
    }
    page.push_str("</tbody></table>\n");
}

fn table_row(page: &mut String, row: &Row, credentials: bool) {
    let _ = write!(
        page,
        "<tr><td>{}<br><small>{}</small></td><td class=\"s-{s}\">{s}</td><td>{}</td>",
        esc(row.user_name.as_deref().unwrap_or("-")),
        esc(row.user_id.as_deref().unwrap_or("-")),
        esc(&row.decided_by.join(", ")),
        s = row.status.as_str(),
    );
    for c in Capability::ALL {
        let Some(cell) = row.capabilities.get(c.name()) else {
            page.push_str("<td></td>");
            continue;
        };
        let now = match switch(cell.current) {
            "" => "?",
            v => v,
        };
        let text = match cell.state {
            CellState::ToChange => format!("{now}→{}", switch(cell.wanted)),
            CellState::Unknown => "?".to_owned(),
            _ => now.to_owned(),
        };
        let _ = write!(
            page,
            "<td class=\"c s-{}\">{text}</td>",
            cell.state.as_str()
        );
    }
    if credentials {
        let held: Vec<String> = CREDENTIAL_TYPES
            .iter()
            .filter_map(|t| row.lingering.get(*t).map(|n| format!("{t} {n}")))
            .collect();
        let _ = write!(page, "<td>{}</td>", esc(&held.join(", ")));
    }
    let _ = writeln!(
        page,
        "<td>{}</td></tr>",
        esc(row.reason.as_deref().unwrap_or(""))
    );
}

/// Escapes text for an HTML element or a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::domains::DomainKnown;
    use crate::decision::policy::Policy;
    use crate::intake::names::DomainUrl;
    use crate::report::posture::{row, PolicyShown};
    use serde_json::json;

    #[test]
    fn the_page_is_self_contained_and_escapes_what_the_domain_sends() {
        let policy = Policy::default();
        let domain = DomainUrl::parse("http://127.0.0.1:9").unwrap();
        let mut report = PostureReport::new(&domain, None, PolicyShown::new(&policy, "built-in"));
        let evil = json!({"id": "0123456789abcdef0123456789abcdef", "userName": "<script>alert(1)</script>\"'&"});
        report.push(row(&evil, &policy, DomainKnown::of(Vec::new())));
        let page = render(&report);
        assert!(!page.to_lowercase().contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        // Nothing the browser would fetch: no link, image, import or URL in the CSS.
        for remote in [
            "src=", "href=", "<link", "<img", "@import", "url(", "<iframe",
        ] {
            assert!(!page.contains(remote), "{remote} in the page");
        }
        assert!(page.contains("id=\"summary-users\"><span class=\"n\">1</span>"));
        assert!(page.contains("<svg") && page.contains("id=\"chart-api_keys\""));
    }
}
