//! A config file and its drop-in directory (`<file>.d/*.yaml`, read in name
//! order, each merged over what came before). The package owns the main
//! files as dpkg conffiles; updates and admins add drop-ins, so an update
//! never rewrites a file dpkg will later ask the admin about.
//!
//! Merging: mappings merge key by key (recursively); a list whose items
//! are all mappings with a `name` merges item by item on that name (a
//! drop-in can change one service of `services.yaml`, or add one); any
//! other value replaces the one before it.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::config::ConfigError;

/// The drop-in an update installs in place of a bundled `arasuld.yaml` or
/// `services.yaml`. An admin's drop-in named after it (`60-…`) wins over it.
pub const UPDATE_DROP_IN: &str = "50-update.yaml";

/// One file of a layered config, as read.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The file name shown in errors.
    pub source: String,
    pub text: String,
}

/// `<file>.d`, next to the file.
pub fn dir_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".d");
    PathBuf::from(s)
}

/// Where an update installs a bundled version of `path`.
pub fn update_path(path: &Path) -> PathBuf {
    dir_of(path).join(UPDATE_DROP_IN)
}

/// The main file (empty when missing and not `required`), then each
/// drop-in. `update` stands in for [`UPDATE_DROP_IN`] (a bundle's file,
/// checked before it is installed).
pub fn read(
    path: &Path,
    required: bool,
    update: Option<&Path>,
) -> Result<Vec<Layer>, Vec<ConfigError>> {
    let cannot_read = |p: &Path, e: std::io::Error| {
        vec![ConfigError {
            source: p.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }]
    };
    let main = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
        Err(e) => return Err(cannot_read(path, e)),
    };
    let mut layers = vec![Layer {
        source: path.display().to_string(),
        text: main,
    }];
    let dir = dir_of(path);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml") && !n.starts_with('.'))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(cannot_read(&dir, e)),
    };
    if update.is_some() && !names.iter().any(|n| n == UPDATE_DROP_IN) {
        names.push(UPDATE_DROP_IN.into());
    }
    names.sort();
    for name in names {
        let (file, shown) = match update {
            Some(u) if name == UPDATE_DROP_IN => (
                u.to_path_buf(),
                format!("{} (from the update bundle)", dir.join(&name).display()),
            ),
            _ => (dir.join(&name), dir.join(&name).display().to_string()),
        };
        let text = std::fs::read_to_string(&file).map_err(|e| cannot_read(&file, e))?;
        layers.push(Layer {
            source: shown,
            text,
        });
    }
    Ok(layers)
}

/// One text from the layers: the main file as it is when there is no
/// drop-in (errors keep their line numbers), else the merged tree
/// re-serialized, named after every file in it.
pub fn merge(layers: &[Layer]) -> Result<Layer, Vec<ConfigError>> {
    if let [only] = layers {
        return Ok(only.clone());
    }
    let mut tree = Value::Mapping(Default::default());
    let mut errors = Vec::new();
    for l in layers {
        if l.text.trim().is_empty() {
            continue;
        }
        match serde_yaml::from_str::<Value>(&l.text) {
            Ok(Value::Null) => {}
            Ok(v @ Value::Mapping(_)) => merge_value(&mut tree, v),
            Ok(_) => errors.push(ConfigError {
                source: l.source.clone(),
                line: None,
                key: String::new(),
                message: "must be a mapping of keys to values".into(),
            }),
            Err(e) => errors.push(ConfigError {
                source: l.source.clone(),
                line: e.location().map(|l| l.line()),
                key: String::new(),
                message: e.to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let names: Vec<&str> = layers.iter().map(|l| l.source.as_str()).collect();
    Ok(Layer {
        source: names.join(" + "),
        text: serde_yaml::to_string(&tree).expect("a YAML tree serializes"),
    })
}

fn merge_value(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_value(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o))
            if b.iter().chain(o.iter()).all(|v| name_of(v).is_some()) =>
        {
            for v in o {
                let name = name_of(&v).map(str::to_owned);
                match b.iter_mut().find(|x| name_of(x).map(str::to_owned) == name) {
                    Some(slot) => merge_value(slot, v),
                    None => b.push(v),
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn name_of(v: &Value) -> Option<&str> {
    v.as_mapping()?.get("name")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(source: &str, text: &str) -> Layer {
        Layer {
            source: source.into(),
            text: text.into(),
        }
    }

    #[test]
    fn drop_ins_merge_mappings_and_named_lists_and_replace_the_rest() {
        let merged = merge(&[
            layer(
                "main",
                "http:\n  listen: 0.0.0.0:80\n  trusted_proxies: [10.0.0.1]\nservices:\n- name: llm\n  image: a:1\n- name: n8n\n  image: b:1\n",
            ),
            layer(
                "50-update.yaml",
                "http:\n  trusted_proxies: [10.0.0.2]\nservices:\n- name: llm\n  image: a:2\n- name: minio\n  image: c:1\n",
            ),
        ])
        .unwrap();
        let v: Value = serde_yaml::from_str(&merged.text).unwrap();
        assert_eq!(v["http"]["listen"], "0.0.0.0:80");
        assert_eq!(v["http"]["trusted_proxies"][0], "10.0.0.2");
        let images: Vec<(&str, &str)> = v["services"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap(), s["image"].as_str().unwrap()))
            .collect();
        assert_eq!(images, [("llm", "a:2"), ("n8n", "b:1"), ("minio", "c:1")]);
        assert_eq!(merged.source, "main + 50-update.yaml");
    }

    #[test]
    fn a_broken_drop_in_is_named_with_its_line() {
        let errs = merge(&[
            layer("main", "http: {}\n"),
            layer("x.yaml", "http:\n  listen: [\n"),
        ])
        .unwrap_err();
        assert_eq!(errs[0].source, "x.yaml");
        assert!(errs[0].line.is_some(), "{errs:?}");
    }

    #[test]
    fn the_update_file_stands_in_for_the_installed_update_drop_in_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("arasuld.yaml");
        std::fs::write(&main, "a: 1\n").unwrap();
        std::fs::create_dir(dir_of(&main)).unwrap();
        std::fs::write(dir_of(&main).join("10-admin.yaml"), "b: 1\n").unwrap();
        std::fs::write(dir_of(&main).join("50-update.yaml"), "c: old\n").unwrap();
        std::fs::write(dir_of(&main).join("70-admin.yaml"), "d: 1\n").unwrap();
        std::fs::write(dir_of(&main).join("50-update.yaml.dpkg-old"), "junk").unwrap();
        let staged = d.path().join("staged.yaml");
        std::fs::write(&staged, "c: new\n").unwrap();
        let layers = read(&main, true, Some(&staged)).unwrap();
        let texts: Vec<&str> = layers.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a: 1\n", "b: 1\n", "c: new\n", "d: 1\n"]);
        assert!(layers[2].source.contains("from the update bundle"));
        let layers = read(&main, true, None).unwrap();
        assert_eq!(layers[2].text, "c: old\n");
    }
}
