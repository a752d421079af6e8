//! Where plugins are looked for, in order of precedence: `--plugin FILE`s, then
//! `$HYPERPRUNE_PLUGIN_PATH` (colon-separated folders or files), then the folder of the
//! executable. The first plugin of a name wins; later ones are skipped with a warning.

use std::path::{Path, PathBuf};

use super::loaded::{LoadError, NOT_A_LIBRARY, NOT_A_PLUGIN, Plugin, load};

/// Environment variable listing extra plugin folders or files.
pub const PLUGIN_PATH_VAR: &str = "HYPERPRUNE_PLUGIN_PATH";

/// The plugins found, and the files that failed to load.
#[derive(Debug, Default)]
pub struct Registry {
    /// Loaded plugins, unique by name, in discovery order.
    pub plugins: Vec<Plugin>,
    /// Files named explicitly (`--plugin`) that failed: these are errors.
    pub explicit_failures: Vec<LoadError>,
    /// Files found by scanning folders that are not plugins (other libraries): skipped.
    pub skipped: Vec<LoadError>,
}

impl Registry {
    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Plugin> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// Why `name` is not here: the installed names, and the plugin files that failed to load
    /// (those whose file name contains `name` first, when there are any).
    pub fn unknown(&self, name: &str) -> String {
        let mut text = format!("unknown pruner '{name}' (installed: {})", self.names());
        let failed: Vec<&LoadError> = self
            .explicit_failures
            .iter()
            .chain(&self.skipped)
            .filter(|e| !e.message.starts_with(NOT_A_PLUGIN) && !e.message.starts_with(NOT_A_LIBRARY))
            .collect();
        let named: Vec<&&LoadError> =
            failed.iter().filter(|e| e.path.file_name().is_some_and(|f| f.to_string_lossy().contains(name))).collect();
        if let Some(e) = named.first() {
            text.push_str(&format!("; a plugin file that may be it failed to load: {e}"));
        } else if !failed.is_empty() {
            let list: Vec<String> = failed.iter().map(ToString::to_string).collect();
            text.push_str(&format!("; plugin files that failed to load: {}", list.join("; ")));
        }
        text
    }

    /// The names of all plugins, comma separated (for error messages).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.plugins.iter().map(Plugin::name).collect();
        if names.is_empty() { "none found".into() } else { names.join(", ") }
    }

    fn add(&mut self, plugin: Plugin) {
        if let Some(first) = self.get(plugin.name()) {
            // The same file found twice (a copy of one build, as a checkout's Python package
            // holds) is not worth a warning; a different build of the same name is.
            if std::fs::read(&plugin.path).ok() == std::fs::read(&first.path).ok() {
                tracing::debug!(
                    "plugin '{}' at {} is a copy of {}",
                    plugin.name(),
                    plugin.path.display(),
                    first.path.display()
                );
                return;
            }
            tracing::warn!(
                "plugin '{}' at {} is shadowed by {}",
                plugin.name(),
                plugin.path.display(),
                first.path.display()
            );
        } else {
            tracing::debug!("loaded plugin '{}' from {}", plugin.name(), plugin.path.display());
            self.plugins.push(plugin);
        }
    }
}

/// Finds and loads every plugin. Explicit files that fail are recorded in
/// [`Registry::explicit_failures`]; scanned files that are not plugins in
/// [`Registry::skipped`].
pub fn discover(explicit: &[PathBuf]) -> Registry {
    discover_checked::<std::convert::Infallible>(explicit, None)
}

/// Tries candidate plugin files somewhere safe before they are loaded here: given the
/// files, says for each whether it can be loaded in this process (`Err`, of the checker's
/// error type `E`, says how it crashed or hung). See [`crate::isolation::probe`], whose
/// error is [`crate::isolation::CallError`].
pub type LoadCheck<'a, E> = &'a dyn Fn(&[PathBuf]) -> Vec<Result<(), E>>;

/// [`discover`], where every candidate file first passes `check` (when given); a file that
/// fails it is never loaded here and counts as a file that failed to load.
pub fn discover_checked<E: std::fmt::Display>(explicit: &[PathBuf], check: Option<LoadCheck<'_, E>>) -> Registry {
    let mut seen = std::collections::HashSet::new();
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    for path in explicit {
        seen.insert(canonical(path));
        candidates.push((path.clone(), true));
    }
    let mut scanned = Vec::new();
    if let Some(paths) = std::env::var_os(PLUGIN_PATH_VAR) {
        for entry in std::env::split_paths(&paths) {
            if entry.is_file() {
                scanned.push(entry);
            } else {
                scanned.extend(libraries_in(&entry));
            }
        }
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        scanned.extend(libraries_in(&dir));
    }
    for path in scanned {
        if seen.insert(canonical(&path)) {
            candidates.push((path, false));
        }
    }
    let checked: Vec<Result<(), E>> = match check {
        Some(check) => check(&candidates.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()),
        None => candidates.iter().map(|_| Ok(())).collect(),
    };
    let mut registry = Registry::default();
    for ((path, explicit), checked) in candidates.into_iter().zip(checked) {
        let loaded = match checked {
            Ok(()) => load(&path),
            Err(how) => Err(LoadError { path, message: format!("the plugin crashed while loading: {how}") }),
        };
        match loaded {
            Ok(p) => registry.add(p),
            Err(e) if explicit => registry.explicit_failures.push(e),
            Err(e) => {
                // Another library beside the plugins is no news; a plugin that fails is.
                if e.message.starts_with(NOT_A_PLUGIN) || e.message.starts_with(NOT_A_LIBRARY) {
                    tracing::debug!("skipped {e}");
                } else {
                    tracing::warn!("skipped a plugin that cannot load: {e}");
                }
                registry.skipped.push(e);
            }
        }
    }
    registry
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Shared libraries directly in `dir`, sorted by name for a stable order.
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut libs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == std::env::consts::DLL_EXTENSION))
        .collect();
    libs.sort();
    libs
}
