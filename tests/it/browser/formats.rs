//! The overview in Chromium against the real daemon: numbers, bytes,
//! percentages and temperatures in the page's language (German: decimal
//! comma; English: decimal point; bytes in IEC units), and the 24 h chart's
//! table alternative, in the accessibility tree and kept up to date.

use std::time::Duration;

use serde_json::{Value, json};

use super::common::TestConfig;
use super::webdriver::Browser;
use super::{CLOSED_DB, start_daemon, wait_healthy};

/// Live samples every second; no database (the overview's live parts and
/// chart come from the sampler).
const LIVE: &str = "metrics:\n  interval: 1s\n  stream_interval: 1s\n";

/// The public overview with a live sample shown.
fn overview(b: &Browser, cfg: &TestConfig) {
    b.goto(&format!("{}/#/overview", cfg.url("")));
    b.wait_js(
        "the overview with a sample",
        Duration::from_secs(60),
        // The CPU figure needs two samples: until then it is a dash.
        "/\\d/.test(document.querySelector('#cpu-value')?.textContent ?? '') && document.querySelectorAll('#card-storage dd').length === 3",
    );
}

/// Switches the language through the page's own select and waits for the
/// overview drawn again in it (the `lang` attribute changes before that).
fn choose_language(b: &Browser, lang: &str) {
    let heading = if lang == "de" {
        "Leistung"
    } else {
        "Performance"
    };
    b.exec(
        "const s = document.querySelector('#lang'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
        vec![json!(lang)],
    );
    b.wait_js(
        &format!("the overview in {lang}"),
        Duration::from_secs(20),
        &format!(
            "document.documentElement.lang === '{lang}' && document.querySelector('#card-perf-h')?.textContent === '{heading}' && document.querySelectorAll('#card-storage dd').length === 3 && /\\d/.test(document.querySelector('#cpu-value')?.textContent ?? '')"
        ),
    );
}

/// The overview's figures that do not have the page language's form, with
/// all of them: [mismatches, figures]. A percentage has one decimal, a byte
/// figure an IEC unit (one decimal under 10), a temperature at most one.
const FIGURES_JS: &str = r#"
const [dec, group] = arguments[0] === 'de' ? [',', '.'] : ['.', ','];
const d = dec === '.' ? '\\.' : dec;
const g = group === '.' ? '\\.' : group;
const num = `\\d{1,3}(${g}\\d{3})*`;
const bytes = `${num}(${d}\\d)? (B|KiB|MiB|GiB|TiB|PiB)`;
const pct = `${num}${d}\\d %`;
const perf = [...document.querySelectorAll('#card-perf dd')].map((e) => e.textContent);
const figures = {
  cpu: [document.querySelector('#cpu-value').textContent, `^${pct}$`],
  ram: [perf[1], `^${pct} \\(${bytes} / ${bytes}\\)$`],
  temperature: [perf[3], `^(—|-?${num}(${d}\\d)? °C)$`],
  disk: [document.querySelector('#card-storage .usage strong').textContent, `^${pct}$`],
  disk_used: [document.querySelectorAll('#card-storage dd')[0].textContent, `^${bytes}$`],
  disk_free: [document.querySelectorAll('#card-storage dd')[1].textContent, `^${bytes}$`],
  disk_size: [document.querySelectorAll('#card-storage dd')[2].textContent, `^${bytes}$`],
};
const bad = Object.entries(figures).filter(([, [text, re]]) => !new RegExp(re).test(text)).map(([k, [text]]) => `${k}: ${text}`);
return [bad, Object.fromEntries(Object.entries(figures).map(([k, [text]]) => [k, text]))];
"#;

#[test]
fn the_overview_writes_numbers_and_bytes_in_the_page_language_in_chromium() {
    let Some(b) = Browser::start() else { return };
    let cfg = TestConfig::new(CLOSED_DB, LIVE);
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    overview(&b, &cfg);

    for lang in ["de", "en"] {
        choose_language(&b, lang);
        let v = b.exec(FIGURES_JS, vec![json!(lang)]);
        eprintln!("overview figures in {lang}: {}", v[1]);
        assert_eq!(v[0], json!([]), "figures not in the {lang} format: {v}");
    }
    // The real figures only show a decimal in bytes under 10 of a unit:
    // the page's own formatters, with known values, show the rule whole.
    let said = b.with_ui_modules(
        "const out = {};
         for (const l of ['de', 'en']) {
           i18n.setLang(l);
           out[l] = [ui.fmtBytes(1.5 * 2 ** 30), ui.fmtBytes(1536), ui.fmtBytes(10 * 2 ** 20), ui.fmtBytes(512),
             ui.fmtPct(12.5), ui.fmtTemp(71.5), ui.fmtNum(1234.5), i18n.t('common.page', { p: 1, n: 2, total: 1234 })];
         }
         i18n.setLang('en');
         // Children nested at any depth (a list of [' ', badge] pairs) are nodes, not '[object …]' text.
         out.nested = ui.h('p', {}, [[' ', ui.h('b', {}, 'x')]]).innerHTML;
         done(out);",
    );
    assert_eq!(
        said,
        json!({
            "de": ["1,5 GiB", "1,5 KiB", "10 MiB", "512 B", "12,5 %", "71,5 °C", "1.234,5", "Seite 1 von 2 (1.234 insgesamt)"],
            "en": ["1.5 GiB", "1.5 KiB", "10 MiB", "512 B", "12.5 %", "71.5 °C", "1,234.5", "Page 1 of 2 (1,234 in all)"],
            "nested": " <b>x</b>",
        })
    );
}

/// Every chart on the overview: its SVG (an image pointing to the table)
/// and its table: [svg role, table id, caption, rows of cells, the
/// wrapper's class, any ancestor hidden from assistive technology].
const CHART_TABLES_JS: &str = r#"
return [...document.querySelectorAll('svg.chart')].map((svg) => {
  const table = document.getElementById(svg.getAttribute('aria-details') || '');
  if (!table) return [svg.getAttribute('role'), null];
  const hidden = [];
  for (let e = table; e; e = e.parentElement) {
    const s = getComputedStyle(e);
    if (s.display === 'none' || s.visibility === 'hidden' || e.hidden || e.getAttribute('aria-hidden') === 'true') hidden.push(e.tagName + '.' + e.className);
  }
  return [svg.getAttribute('role'), table.id, table.caption?.textContent,
    [...table.tBodies[0].rows].map((r) => [...r.cells].map((c) => c.textContent)),
    table.parentElement.className, hidden, svg.getAttribute('aria-label')];
});
"#;

#[test]
fn every_overview_chart_has_a_table_for_screen_readers_kept_up_to_date_in_chromium() {
    let Some(b) = Browser::start() else { return };
    let cfg = TestConfig::new(CLOSED_DB, LIVE);
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    overview(&b, &cfg);
    choose_language(&b, "de");
    b.wait_js(
        "a row in the chart's table",
        Duration::from_secs(30),
        "document.querySelector('svg.chart') && document.querySelector('table.chart-table tbody tr')",
    );

    let charts = b.exec(CHART_TABLES_JS, vec![]);
    let charts = charts.as_array().unwrap();
    assert!(!charts.is_empty(), "no chart on the overview");
    for c in charts {
        assert_eq!(c[0], "img", "{c}");
        let id = c[1]
            .as_str()
            .unwrap_or_else(|| panic!("a chart without its table: {c}"));
        assert_eq!(
            c[2],
            "Diagrammwerte: der neueste, dann einer je Stunde, neueste zuerst"
        );
        let rows = c[3].as_array().unwrap();
        assert!(!rows.is_empty(), "{c}");
        for row in rows {
            let cells: Vec<&str> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(
                cells.len(),
                5,
                "time, CPU, memory, GPU, temperature: {cells:?}"
            );
            assert!(is_clock(cells[0]), "{cells:?}");
            // "—" where a series has no value (no GPU or temperature here;
            // no CPU figure before a second reading); memory always has one.
            assert!(
                cells[1..].iter().all(|v| is_german_number(v) || *v == "—"),
                "not a number in German form: {cells:?}"
            );
            assert!(is_german_number(cells[2]), "no memory figure: {cells:?}");
        }
        assert_eq!(
            c[4], "sr-only",
            "the table is visually hidden, not removed: {c}"
        );
        assert_eq!(c[5], json!([]), "hidden from assistive technology: {c}");
        assert!(
            c[6].as_str().unwrap().contains("Diagrammwerte"),
            "the image points to its table: {c}"
        );
        assert_in_accessibility_tree(&b, id);
    }

    // A new sample updates the table in place: the same newest row, a newer time.
    let first = b.exec(
        "const r = document.querySelector('table.chart-table tbody tr'); r.dataset.mark = 'kept'; return Number(r.dataset.t)",
        vec![],
    );
    let newer = b.wait_js(
        "the newest row to take a newer sample",
        Duration::from_secs(20),
        &format!(
            "(() => {{ const r = document.querySelector('table.chart-table tbody tr'); return r.dataset.mark === 'kept' && Number(r.dataset.t) > {first} && Number(r.dataset.t); }})()"
        ),
    );
    assert!(newer.as_f64() > first.as_f64(), "{first} → {newer}");
}

/// The table's node in Chromium's accessibility tree: not ignored, a
/// table, named by its caption.
fn assert_in_accessibility_tree(b: &Browser, id: &str) {
    let doc = b.cdp("DOM.getDocument", json!({"depth": 0}));
    let node = b.cdp(
        "DOM.querySelector",
        json!({"nodeId": doc["root"]["nodeId"], "selector": format!("#{id}")}),
    );
    let ax = b.cdp(
        "Accessibility.getPartialAXTree",
        json!({"nodeId": node["nodeId"], "fetchRelatives": false}),
    );
    let me = ax["nodes"]
        .as_array()
        .and_then(|n| n.first())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(me["ignored"], false, "the table is ignored: {me}");
    assert_eq!(me["role"]["value"], "table", "{me}");
    assert!(
        me["name"]["value"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Diagrammwerte"),
        "{me}"
    );
}

fn is_clock(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit())
}

/// "12", "12,5", "1.234,5": digits, German grouping, at most one decimal.
fn is_german_number(s: &str) -> bool {
    let (int, frac) = s.split_once(',').unwrap_or((s, ""));
    let groups: Vec<&str> = int.split('.').collect();
    let ints_ok = !groups[0].is_empty()
        && groups[0].len() <= 3
        && groups.iter().all(|g| g.bytes().all(|c| c.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3);
    let frac_ok = !s.contains(',') || (frac.len() == 1 && frac.as_bytes()[0].is_ascii_digit());
    ints_ok && frac_ok
}
