//! `scripts/study.sh --quick`: every table of the hypernetwork study on the digits data, in
//! about a minute; resumable (a second run adds nothing) and shardable (shards merge into the
//! same rows).

use std::path::Path;
use std::process::Command;

use hyperprune_tests::{ensure_built, jsonl, release_dir, root};

fn study(out: &Path, extra: &[&str]) -> std::process::Output {
    ensure_built();
    let hp = release_dir().join("hyperprune");
    Command::new("bash")
        .arg(root().join("scripts/study.sh"))
        .args(["--quick", "--out", out.to_str().unwrap(), "--hyperprune", hp.to_str().unwrap()])
        .args(extra)
        .env_remove("HYPERPRUNE_PLUGIN_PATH")
        .output()
        .expect("bash runs")
}

#[test]
fn the_quick_study_writes_every_table_and_plot_and_resumes_without_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let o = study(&out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("study.md")).unwrap();
    for stage in ["zoos", "fits", "benches"] {
        assert!(md.contains(&format!("| {stage} | ")), "no wall time for {stage}:\n{md}");
    }
    for title in [
        "The mask ceiling",
        "Cross-zoo",
        "Scaling",
        "Ablations",
        "Learning curve",
        "Controllability",
        "Wall time per stage",
    ] {
        assert!(md.contains(&format!("## {title}")), "study.md lacks {title}:\n{md}");
    }
    let benches = ["ceiling", "cross-zoo", "scaling-wide", "ablations", "learning-curve", "controllability"];
    for bench in benches {
        let run = out.join("runs").join(bench);
        for file in ["report.html", "retention.svg", "sparsity.svg", "summary.md"] {
            assert!(run.join(file).is_file(), "{bench}: {file} missing");
        }
        assert!(md.contains(&format!("### {bench} (")), "{bench} has no table in study.md");
        let all = jsonl(&run.join("results.jsonl"));
        assert!(all.iter().all(|r| r["status"] == "ok"), "{bench}: {all:?}");
    }
    // The ceiling table has the data-free formulas, the hypernetwork, OBS and maskopt; maskopt
    // reaches at least magnitude everywhere.
    for pruner in ["magnitude", "lamp", "lap", "synflow", "obs", "maskopt", "hypernet"] {
        assert!(md.contains(&format!("| {pruner}")), "{pruner} missing from the study:\n{md}");
    }
    // OBS also runs on moment-matched inputs, and its rows say so.
    let ceiling = jsonl(&out.join("runs/ceiling/results.jsonl"));
    assert!(ceiling.iter().any(|r| r["pruner"] == "obs" && r["data"] == "moments"), "no obs row on moments");
    // And the hypernetwork refined on its stored draws: still data-free.
    let refined: Vec<_> =
        ceiling.iter().filter(|r| r["pruner"] == "hypernet" && r["options"]["refine"] == 25).collect();
    assert!(!refined.is_empty() && refined.iter().all(|r| r["data"] == "none"), "{refined:?}");
    // Cross-zoo rows carry the zoo each state was fitted on.
    let cross = jsonl(&out.join("runs/cross-zoo/results.jsonl"));
    let fit_zoos: std::collections::BTreeSet<&str> = cross.iter().filter_map(|r| r["fit_zoo"].as_str()).collect();
    assert_eq!(fit_zoos.into_iter().collect::<Vec<_>>(), ["digits", "digits-sgd"]);
    assert!(md.contains("[fitted on digits-sgd]") && md.contains("[fitted on digits]"), "{md}");
    // Ablations and the learning curve name their states by how they were fitted.
    for label in ["arch=equivariant", "features=magnitude", "floor=0.0", "fit_data=synthetic", "rescale=true"] {
        assert!(md.contains(&format!("[fitted on digits, {label}]")), "ablation {label} missing:\n{md}");
    }
    for k in [2, 4, 8, 12] {
        assert!(md.contains(&format!("[fitted on digits, {k} train]")), "curve point {k} missing:\n{md}");
    }
    // Controllability: the sparsity emerged and was recorded, not enforced.
    let control = jsonl(&out.join("runs/controllability/results.jsonl"));
    assert!(control.iter().all(|r| r["options"]["sparsity_check"] == "report" && r["options"]["mask"] == "threshold"));
    assert!(control.iter().any(|r| r["achieved_sparsity"] != r["requested_sparsity"]), "threshold masks are not exact");

    // Resume: a second run trains, fits and prunes nothing new.
    let before: Vec<usize> =
        benches.iter().map(|b| jsonl(&out.join("runs").join(b).join("results.jsonl")).len()).collect();
    let states = std::fs::read_dir(out.join("states")).unwrap().count();
    let o = study(&out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after: Vec<usize> =
        benches.iter().map(|b| jsonl(&out.join("runs").join(b).join("results.jsonl")).len()).collect();
    assert_eq!(before, after);
    assert_eq!(states, std::fs::read_dir(out.join("states")).unwrap().count());

    // Shards: two shards of the ceiling bench, merged by the report stage, give the same rows.
    let sharded = dir.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    for sub in ["zoos", "states"] {
        std::os::unix::fs::symlink(out.join(sub), sharded.join(sub)).unwrap();
    }
    for shard in ["0/2", "1/2"] {
        let o = study(&sharded, &["--stage", "benches", "--shard", shard]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = study(&sharded, &["--stage", "report"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = |r: &serde_json::Value| {
        format!("{}|{}|{}|{}|{}", r["member"], r["pruner"], r["options"], r["requested_sparsity"], r["pruned_accuracy"])
    };
    let mut whole: Vec<String> = jsonl(&out.join("runs/ceiling/results.jsonl")).iter().map(key).collect();
    let mut merged: Vec<String> = jsonl(&sharded.join("runs/ceiling/results.jsonl")).iter().map(key).collect();
    whole.sort();
    merged.sort();
    assert_eq!(whole, merged);
}
