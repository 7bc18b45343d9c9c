//! Stamps the binary with the git commit it was built from, or `unknown` when
//! there is no `.git` (a source tarball, a .deb build from an export), and
//! renders the man page from the command line's own definition (src/cli.rs)
//! into OUT_DIR, gzip-compressed, for `arasuld print-man-page` to embed.

use std::io::Write;
use std::process::Command;

/// The command line, compiled here as in the library. What it names of the
/// library has stand-ins below: the page needs names and help texts, not
/// the library's parsers or build stamp.
#[path = "src/cli.rs"]
#[allow(dead_code)]
mod cli;
mod build_info {
    pub const VERSION_LINE: &str = env!("CARGO_PKG_VERSION");
}
mod update {
    pub type Version = String;
}

fn main() {
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let hash = std::env::var("ARASUL_BUILD_HASH").unwrap_or(hash);
    println!("cargo:rustc-env=ARASUL_BUILD_HASH={hash}");
    println!("cargo:rerun-if-env-changed=ARASUL_BUILD_HASH");
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    // The version the binary reports; CARGO_PKG_VERSION unless a test
    // package of another version is built (tests/deb.sh).
    let version = std::env::var("ARASUL_VERSION")
        .unwrap_or_else(|_| std::env::var("CARGO_PKG_VERSION").expect("set by cargo"));
    println!("cargo:rustc-env=ARASUL_VERSION={version}");
    println!("cargo:rerun-if-env-changed=ARASUL_VERSION");
    println!("cargo:rerun-if-changed=migrations");

    println!("cargo:rerun-if-changed=src/cli.rs");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let page = man_page(&version, &page_date());
    std::fs::write(out.join("arasuld.1"), &page).expect("writing arasuld.1 to OUT_DIR");
    // Compressed as `gzip -9n` would (no name, no time stamp): the package
    // installs these bytes as they are.
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    gz.write_all(page.as_bytes()).expect("gzip into memory");
    let gz = gz.finish().expect("gzip into memory");
    std::fs::write(out.join("arasuld.1.gz"), gz).expect("writing arasuld.1.gz to OUT_DIR");
}

/// One page for the whole command line (`man arasuld`): the global options,
/// then every subcommand with its synopsis, description and options, then
/// exit statuses, environment, logging, signals and files.
fn man_page(version: &str, date: &str) -> String {
    use clap::CommandFactory;
    let mut cmd = cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = |c: clap::Command| {
        clap_mangen::Man::new(c)
            .title("ARASULD")
            .section("1")
            .date(date)
            .source(format!("arasuld {version}"))
            .manual("Arasul appliance")
    };
    let top = man(cmd.clone());
    let mut page = String::new();
    page.push_str(&render(|w| top.render_title(w)));
    for part in [
        render(|w| top.render_name_section(w)),
        render(|w| top.render_synopsis_section(w)),
        render(|w| top.render_description_section(w)),
        render(|w| top.render_options_section(w)),
    ] {
        page.push_str(&part);
    }
    page.push_str(".SH COMMANDS\n");
    for sub in visible_subcommands(&cmd) {
        commands(sub, &man, &mut page);
    }
    page.push_str(&extra_sections());
    // Each rendered part starts with roff's apostrophe preamble; once is enough.
    let preamble = roff::Roff::new().render();
    let first = page.find(&preamble).map_or(0, |i| i + preamble.len());
    let (head, rest) = page.split_at(first);
    format!("{head}{}", rest.replace(&preamble, ""))
}

/// The page's date: the commit's (as the build hash), else
/// SOURCE_DATE_EPOCH's, as YYYY-MM-DD; never the build's own time.
fn page_date() -> String {
    let git = Command::new("git")
        .args(["log", "-1", "--format=%cs"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = || {
        let secs: i64 = std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok()?;
        // Days to a civil date (proleptic Gregorian), after Howard Hinnant.
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Some(format!("{year:04}-{month:02}-{day:02}"))
    };
    git.or_else(epoch)
        .unwrap_or_else(|| "unknown date".to_string())
}

/// A subcommand's subsection (`.SS arasuld admin key create`) with its
/// synopsis, description and own options (the global --config and --help
/// are described once, at the top), then its subcommands'.
fn commands(
    sub: &clap::Command,
    man: &dyn Fn(clap::Command) -> clap_mangen::Man,
    page: &mut String,
) {
    let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_string();
    let mut own = sub.clone();
    for global in ["config", "help"] {
        if own.get_arguments().any(|a| a.get_id() == global) {
            own = own.mut_arg(global, |a| a.hide(true));
        }
    }
    let m = man(own.clone());
    let has_args = own.get_arguments().any(|a| !a.is_hide_set());
    let mut roff = roff::Roff::new();
    roff.control("SS", [name.as_str()]);
    page.push_str(&roff.render());
    // The heading is the synopsis of a command without arguments.
    if has_args || own.has_subcommands() {
        page.push_str(&body(render(|w| m.render_synopsis_section(w))));
        page.push_str(".PP\n");
    }
    page.push_str(&body(render(|w| m.render_description_section(w))));
    if has_args {
        page.push_str(&body(render(|w| m.render_options_section(w))));
    }
    for s in visible_subcommands(sub) {
        commands(s, man, page);
    }
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn render(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).expect("rendering into memory");
    String::from_utf8(buf).expect("roff renders UTF-8")
}

/// A section's text without its `.SH` heading (it goes under a `.SS`).
fn body(section: String) -> String {
    section
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The sections no clap attribute holds.
fn extra_sections() -> String {
    use roff::{Roff, bold, italic, roman};
    let mut r = Roff::new();
    let tp = |r: &mut Roff, term: roff::Inline, text: &str| {
        r.control("TP", []).text([term]).text([roman(text)]);
    };

    r.control("SH", ["EXIT STATUS"]);
    for (code, text) in cli::EXIT_STATUSES {
        tp(&mut r, bold(code.to_string()), text);
    }

    r.control("SH", ["ENVIRONMENT"]);
    tp(
        &mut r,
        bold("ARASUL_CONFIG"),
        "The config file, as --config.",
    );
    tp(
        &mut r,
        bold("ARASUL_SECTION__KEY"),
        "Overrides one config key, e.g. ARASUL_HTTP__LISTEN=127.0.0.1:8080 for http.listen; \
         a misspelt variable is a config error.",
    );
    tp(
        &mut r,
        bold("RUST_LOG"),
        "Overrides logging.level (e.g. info, or warn,arasuld=debug).",
    );
    tp(
        &mut r,
        bold("JOURNAL_STREAM"),
        "Set by systemd when stdout or stderr is connected to the journal. When it names this \
         process's stderr or stdout, log entries go to journald directly (see LOGGING); \
         otherwise log lines are written to stdout.",
    );
    tp(
        &mut r,
        bold("NOTIFY_SOCKET, WATCHDOG_USEC"),
        "Set by systemd: the daemon sends READY=1 once it serves and WATCHDOG=1 while its \
         core workers are alive.",
    );

    r.control("SH", ["LOGGING"]);
    r.text([roman(
        "Under systemd every log entry goes to the journal with its priority (error 3, \
         warning 4, info 6, debug 7), so journalctl -u arasuld -p warning shows warnings and \
         errors. Each entry's MESSAGE is the line that would go to stdout (message and fields, \
         without a time stamp); its fields are also journal fields named F_<FIELD> (e.g. \
         F_ERROR), with TARGET, CODE_FILE and CODE_LINE, and SYSLOG_IDENTIFIER=arasuld. \
         Errors before logging is set up (an invalid config) go to stderr with the journal's \
         error priority. Outside systemd, log lines go to stdout. With logging.json_file set, \
         every entry is also a JSON line in that file, which the dashboard's log viewer reads.",
    )]);

    r.control("SH", ["SIGNALS"]);
    r.text([roman(
        "SIGTERM and SIGINT shut down in order and exit 0; SIGHUP re-reads the config, \
         the service catalog and the admin password (an invalid config is refused and the \
         running one kept).",
    )]);

    r.control("SH", ["FILES"]);
    for (path, text) in [
        (
            "/etc/arasul/arasuld.yaml",
            "Main configuration, with drop-ins in /etc/arasul/arasuld.yaml.d/.",
        ),
        (
            "/etc/arasul/services.yaml",
            "The container catalog, with drop-ins in /etc/arasul/services.yaml.d/.",
        ),
        (
            "/etc/arasul/secrets/",
            "JWT key, admin password hash, initial admin password (root only).",
        ),
        (
            "/etc/arasul/keys/",
            "Public keys trusted for update bundles.",
        ),
        ("/var/lib/arasul/", "State: updates, backups, spools."),
        ("/var/log/arasul/", "Log files, rotated by logrotate."),
        (
            "/usr/share/doc/arasuld/",
            "The README (configuration keys, API, updates, backups) and the licences of the \
             crates the binary is built from.",
        ),
    ] {
        tp(&mut r, italic(path), text);
    }

    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), "),
        bold("systemd.exec"),
        roman("(5)"),
    ]);
    r.render()
}
