//! `hyperprune plugins list|info`.

use crate::cli::{Format, GlobalArgs, PluginsCommand};
use crate::failure::bad_input;
use hyperprune_sdk::OptionKind;

/// Runs `plugins list` or `plugins info`.
///
/// # Errors
/// Bad input for an unknown plugin name or a failing `--plugin` file.
pub fn run(global: &GlobalArgs, cmd: PluginsCommand) -> anyhow::Result<()> {
    let registry = super::registry(global)?;
    match cmd {
        PluginsCommand::List { format } => {
            match format {
                Format::Json => {
                    let rows: Vec<_> = registry
                        .plugins
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "name": p.info.name,
                                "version": p.info.version,
                                "sdk_version": p.sdk_version,
                                "path": p.path,
                                "description": p.info.description,
                                "capabilities": p.info.capabilities,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Format::Table => {
                    println!("{:<14} {:<8} {:<8} {:<28} PATH", "NAME", "VERSION", "SDK", "CAPABILITIES");
                    for p in &registry.plugins {
                        let c = &p.info.capabilities;
                        let caps: Vec<&str> = [
                            (c.needs_data, "data"),
                            (c.needs_gradients, "gradients"),
                            (c.learnable, "learnable"),
                            (c.fit_needs_data, "fit-data"),
                            (c.updates_weights, "updates-weights"),
                        ]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, n)| *n)
                        .collect();
                        let caps = if caps.is_empty() { "-".to_string() } else { caps.join(",") };
                        println!(
                            "{:<14} {:<8} {:<8} {:<28} {}",
                            p.info.name,
                            p.info.version,
                            p.sdk_version,
                            caps,
                            p.path.display()
                        );
                    }
                    if registry.plugins.is_empty() {
                        println!("(no plugins found: build them with `cargo build --release` or pass --plugin FILE)");
                    }
                }
            }
            Ok(())
        }
        PluginsCommand::Info { name, format } => {
            let p = registry.get(&name).ok_or_else(|| bad_input(registry.unknown(&name)))?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&p.info)?),
                Format::Table => {
                    println!("{} {} — {}", p.info.name, p.info.version, p.info.description);
                    println!("path: {}\nsdk: {}", p.path.display(), p.sdk_version);
                    println!("capabilities: {}", serde_json::to_string(&p.info.capabilities)?);
                    if p.info.options.is_empty() {
                        println!("options: none");
                    } else {
                        println!("options (--opt NAME=VALUE):");
                        for o in &p.info.options {
                            let choices = match &o.kind {
                                OptionKind::Choice { values } => format!(" [{}]", values.join("|")),
                                _ => String::new(),
                            };
                            println!("  {:<16} default {:<10} {}{choices}", o.name, o.default.to_string(), o.doc);
                        }
                    }
                    for e in &p.info.examples {
                        let opts: String = e.options.iter().map(|o| format!(" --opt {o}")).collect();
                        println!(
                            "example: {} — hyperprune prune --pruner {} --sparsity {}{opts} ...",
                            e.description, p.info.name, e.sparsity
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
