//! Static platform facts: L4T/JetPack from `nv_tegra_release`, the board model
//! from the device tree, the distribution from `os-release`.

use super::{CollectError, trim_sysfs};

const TEGRA_RELEASE: &str = "/etc/nv_tegra_release";

/// L4T release → JetPack, exact releases only (NVIDIA's JetPack archive). An
/// L4T not listed maps to `None` rather than to a guess.
const JETPACK_FOR_L4T: &[(&str, &str)] = &[
    ("36.5.0", "6.2.2"),
    ("36.4.7", "6.2.1"),
    ("36.4.4", "6.2.1"),
    ("36.4.3", "6.2"),
    ("36.4.0", "6.1"),
    ("36.3.0", "6.0"),
    ("36.2.0", "6.0 DP"),
    ("35.6.1", "5.1.5"),
    ("35.6.0", "5.1.4"),
    ("35.5.0", "5.1.3"),
    ("35.4.1", "5.1.2"),
    ("35.3.1", "5.1.1"),
    ("35.2.1", "5.1"),
    ("35.1.0", "5.0.2"),
    ("32.7.6", "4.6.6"),
    ("32.7.5", "4.6.5"),
    ("32.7.4", "4.6.4"),
    ("32.7.3", "4.6.3"),
    ("32.7.2", "4.6.2"),
    ("32.7.1", "4.6.1"),
    ("32.6.1", "4.6"),
];

/// `# R36 (release), REVISION: 4.3, GCID: …` → `36.4.3`.
pub fn parse_nv_tegra_release(text: &str) -> Result<String, CollectError> {
    let line = text.lines().next().unwrap_or("");
    let major: String = line
        .trim_start_matches('#')
        .trim_start()
        .strip_prefix('R')
        .map(|r| r.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    if major.is_empty() {
        return Err(CollectError::malformed(
            TEGRA_RELEASE,
            format!("first line does not start with `# R<major>`: {line:?}"),
        ));
    }
    let revision = line
        .split(',')
        .find_map(|part| part.trim().strip_prefix("REVISION:"))
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            CollectError::malformed(TEGRA_RELEASE, format!("no `REVISION: x.y` in {line:?}"))
        })?;
    Ok(format!("{major}.{revision}"))
}

/// The JetPack release that shipped this L4T (`36.4.3` → `6.2`).
pub fn jetpack_for_l4t(l4t: &str) -> Option<&'static str> {
    // `36.4` as some tools write it is the `36.4.0` release.
    let full;
    let key = if l4t.matches('.').count() == 1 {
        full = format!("{l4t}.0");
        full.as_str()
    } else {
        l4t
    };
    JETPACK_FOR_L4T
        .iter()
        .find(|(l, _)| *l == key)
        .map(|(_, jp)| *jp)
}

/// `PRETTY_NAME` from an os-release file, unquoted (shell-style quoting).
pub fn parse_os_release_pretty_name(text: &str) -> Option<String> {
    let raw = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let value = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        inner.to_string()
    } else {
        raw.to_string()
    };
    let value = value.trim().to_string();
    (!value.is_empty()).then_some(value)
}

/// `/proc/device-tree/model` is a NUL-terminated string.
pub fn parse_device_tree_model(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let model = trim_sysfs(&text);
    (!model.is_empty()).then(|| model.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r36_revision_4_3_is_l4t_36_4_3_and_jetpack_6_2() {
        let l4t = parse_nv_tegra_release(
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n",
        )
        .unwrap();
        assert_eq!(l4t, "36.4.3");
        assert_eq!(jetpack_for_l4t(&l4t), Some("6.2"));
    }

    #[test]
    fn jetpack_table_covers_5_and_6_and_says_none_for_unknown() {
        assert_eq!(jetpack_for_l4t("35.4.1"), Some("5.1.2"));
        assert_eq!(jetpack_for_l4t("36.3.0"), Some("6.0"));
        assert_eq!(jetpack_for_l4t("36.4"), Some("6.1"));
        assert_eq!(jetpack_for_l4t("36.9.9"), None);
        assert_eq!(jetpack_for_l4t("garbage"), None);
    }

    #[test]
    fn malformed_tegra_release_is_an_error() {
        assert!(parse_nv_tegra_release("").is_err());
        assert!(parse_nv_tegra_release("# R36 (release), GCID: 1").is_err());
        assert!(parse_nv_tegra_release("hello, REVISION: 4.3").is_err());
    }

    #[test]
    fn pretty_name_is_unquoted() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release_pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release_pretty_name("PRETTY_NAME='Ubuntu 22.04.5 LTS'").as_deref(),
            Some("Ubuntu 22.04.5 LTS")
        );
        assert_eq!(
            parse_os_release_pretty_name("PRETTY_NAME=\"A \\\"quoted\\\" name\"").as_deref(),
            Some("A \"quoted\" name")
        );
        assert_eq!(parse_os_release_pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn device_tree_model_drops_the_nul() {
        assert_eq!(
            parse_device_tree_model(b"NVIDIA Jetson AGX Orin Developer Kit\0").as_deref(),
            Some("NVIDIA Jetson AGX Orin Developer Kit")
        );
        assert_eq!(parse_device_tree_model(b"\0"), None);
    }
}
