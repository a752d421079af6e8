//! The bench harness end to end: rows, resuming, error rows, the report, and `eval` on a
//! PyTorch-layout file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hyperprune_tests::{digits_zoo, fixtures, hyperprune, text};

/// A 3-member digits zoo, trained once per test process (all members in the test split).
fn zoo() -> &'static Path {
    static ZOO: OnceLock<PathBuf> = OnceLock::new();
    ZOO.get_or_init(|| digits_zoo("digits-zoo", 3, 4, "0,0,1"))
}

fn bench(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "bench",
        "--zoo",
        zoo().to_str().unwrap(),
        "--pruners",
        "random,magnitude",
        "--compression",
        "2,8",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend(extra);
    hyperprune(&args)
}

fn rows(run: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(run.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| match serde_json::from_str(l).unwrap() {
            serde_json::Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

const FIELDS: [&str; 24] = [
    "zoo",
    "member",
    "arch",
    "dataset",
    "pruner",
    "pruner_version",
    "options",
    "seed",
    "requested_sparsity",
    "compression",
    "achieved_sparsity",
    "achieved_compression",
    "model_compression",
    "flops_speedup",
    "dense_accuracy",
    "dense_loss",
    "pruned_accuracy",
    "pruned_loss",
    "retention",
    "prune_seconds",
    "calib_samples",
    "status",
    "error",
    "seed",
];

#[test]
fn three_members_two_pruners_two_compressions_make_twelve_complete_rows_once() {
    let run = tempfile::tempdir().unwrap();
    let o = bench(run.path(), &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    let first = rows(run.path());
    assert_eq!(first.len(), 12);
    for row in &first {
        for field in FIELDS {
            assert!(row.contains_key(field), "missing {field} in {row:?}");
        }
        assert_eq!(row["status"], "ok", "{row:?}");
        for field in ["achieved_sparsity", "pruned_accuracy", "retention", "prune_seconds", "flops_speedup"] {
            assert!(row[field].is_number(), "{field} in {row:?}");
        }
        let c = row["compression"].as_f64().unwrap();
        assert!(c == 2.0 || c == 8.0);
        assert!((row["achieved_compression"].as_f64().unwrap() - c).abs() / c < 0.01, "{row:?}");
    }
    assert!(run.path().join("report.html").is_file() && run.path().join("summary.md").is_file());
    let again = bench(run.path(), &[]);
    assert!(again.status.success());
    assert_eq!(rows(run.path()), first, "a second identical run appends nothing");
}

fn without_timing(
    mut rows: Vec<serde_json::Map<String, serde_json::Value>>,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    for r in &mut rows {
        r.remove("prune_seconds");
    }
    rows
}

#[test]
fn an_interrupted_run_resumes_to_the_same_file() {
    let whole = tempfile::tempdir().unwrap();
    assert!(bench(whole.path(), &["--jobs", "2"]).status.success());
    let cut = tempfile::tempdir().unwrap();
    assert!(bench(cut.path(), &["--stop-after", "5"]).status.success());
    assert_eq!(rows(cut.path()).len(), 5);
    // A kill mid-write leaves half a line: resuming drops it.
    let path = cut.path().join("results.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"zoo\":\"digits-zo");
    std::fs::write(&path, text).unwrap();
    assert!(bench(cut.path(), &[]).status.success());
    assert_eq!(
        without_timing(rows(cut.path())),
        without_timing(rows(whole.path())),
        "prune times aside, the files are equal"
    );
}

#[test]
fn a_panicking_plugin_gives_error_rows_and_the_run_completes() {
    let run = tempfile::tempdir().unwrap();
    let plugin = fixtures().misbehave.to_str().unwrap().to_string();
    let o = hyperprune(&[
        "--plugin",
        &plugin,
        "bench",
        "--zoo",
        zoo().to_str().unwrap(),
        "--pruners",
        "misbehave,magnitude",
        "--opt",
        "misbehave.mode=panic",
        "--compression",
        "4",
        "--out",
        run.path().to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let all = rows(run.path());
    assert_eq!(all.len(), 6);
    for row in &all {
        if row["pruner"] == "misbehave" {
            assert_eq!(row["status"], "error");
            assert!(row["error"].as_str().unwrap().contains("plugin 'misbehave' panicked: fixture panic"), "{row:?}");
        } else {
            assert_eq!(row["status"], "ok");
        }
    }
    let html = std::fs::read_to_string(run.path().join("report.html")).unwrap();
    assert!(html.contains("fixture panic"), "error rows are listed in the report");
}

#[test]
fn shards_merge_into_the_whole() {
    let whole = tempfile::tempdir().unwrap();
    assert!(bench(whole.path(), &[]).status.success());
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert!(bench(a.path(), &["--shard", "0/2"]).status.success());
    assert!(bench(b.path(), &["--shard", "1/2"]).status.success());
    let merged = tempfile::tempdir().unwrap();
    let o = hyperprune(&[
        "bench",
        "merge",
        "--out",
        merged.path().to_str().unwrap(),
        a.path().to_str().unwrap(),
        b.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let key =
        |r: &serde_json::Map<String, serde_json::Value>| format!("{}{}{}", r["member"], r["pruner"], r["compression"]);
    let mut m: Vec<_> = without_timing(rows(merged.path()));
    let mut w: Vec<_> = without_timing(rows(whole.path()));
    m.sort_by_key(key);
    w.sort_by_key(key);
    assert_eq!(m, w);
}

/// A PyTorch `nn.Sequential(Conv2d(1,2,3), ReLU(), Flatten(), Linear(72,10))` state_dict in
/// PyTorch's layout, with a spec beside it: `eval` must give the accuracy a direct
/// computation in PyTorch's conventions gives.
#[test]
fn pytorch_layout_state_dict_evaluates_like_a_direct_computation() {
    use hyperprune_core::dataset::{DataOptions, load};
    let dir = tempfile::tempdir().unwrap();
    let conv_w: Vec<f32> = (0..18).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
    let conv_b = [0.05f32, -0.02];
    let fc_w: Vec<f32> = (0..720).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.05).collect();
    let fc_b: Vec<f32> = (0..10).map(|i| i as f32 * 0.01).collect();
    let entries: Vec<(String, Vec<usize>, &[f32])> = vec![
        ("0.weight".into(), vec![2, 1, 3, 3], &conv_w),
        ("0.bias".into(), vec![2], &conv_b),
        ("3.weight".into(), vec![10, 72], &fc_w),
        ("3.bias".into(), vec![10], &fc_b),
    ];
    let model = dir.path().join("torch.safetensors");
    std::fs::write(&model, hyperprune_core::model::encode_f32(&entries, None)).unwrap();
    std::fs::write(
        dir.path().join("torch.arch.json"),
        r#"{"name":"torch-seq","input":[1,8,8],"classes":10,"layers":[
            {"type":"conv2d","out_channels":2,"kernel":3},{"type":"relu"},{"type":"flatten"},
            {"type":"linear","out_features":10}]}"#,
    )
    .unwrap();
    // Direct computation with PyTorch's conventions: cross-correlation, [out,in,kh,kw]
    // weights, flatten in C,H,W order, logits = W x + b.
    let data = load("digits", &DataOptions::default()).unwrap();
    let mut correct = 0;
    for i in 0..data.test.len() {
        let img = data.test.image(i);
        let mut feat = vec![0f32; 72];
        for c in 0..2 {
            for y in 0..6 {
                for x in 0..6 {
                    let mut s = conv_b[c];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            s += conv_w[c * 9 + ky * 3 + kx] * img[(y + ky) * 8 + x + kx];
                        }
                    }
                    feat[c * 36 + y * 6 + x] = s.max(0.0);
                }
            }
        }
        let logits: Vec<f32> =
            (0..10).map(|o| fc_b[o] + (0..72).map(|j| fc_w[o * 72 + j] * feat[j]).sum::<f32>()).collect();
        let best = (0..10).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
        correct += usize::from(best as u32 == data.test.labels[i]);
    }
    let expected = correct as f64 / data.test.len() as f64;
    let o = hyperprune(&["eval", "--model", model.to_str().unwrap(), "--dataset", "digits", "--format", "json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((out["accuracy"].as_f64().unwrap() - expected).abs() < 1e-9, "{out} vs {expected}");
}

#[test]
fn calib_data_moments_serves_moment_matched_inputs_and_marks_the_rows() {
    let run = tempfile::tempdir().unwrap();
    let o = hyperprune(&[
        "bench",
        "--zoo",
        zoo().to_str().unwrap(),
        "--pruners",
        "obs,maskopt",
        "--compression",
        "2",
        "--opt",
        "obs.calib_data=moments",
        "--opt",
        "maskopt.calib_data=moments",
        "--opt",
        "maskopt.steps=5",
        "--out",
        run.path().to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let rows = rows(run.path());
    assert_eq!(rows.len(), 6, "2 pruners x 3 members");
    for row in &rows {
        assert_eq!(row["data"], "moments", "{row:?}");
        assert_eq!(row["options"]["calib_data"], "moments", "{row:?}");
        assert_eq!(row["status"], "ok", "{row:?}");
        assert!(row["retention"].as_f64().unwrap() > 0.0, "{row:?}");
    }
    // A pruner without data has nothing to serve moments to, and one that reads gradients
    // of a loss on labels cannot be served them: one line each, exit 2.
    for (pruner, expected) in
        [("magnitude", "pruner 'magnitude' prunes without data"), ("woodfisher", "labelled samples")]
    {
        let o = hyperprune(&[
            "bench",
            "--zoo",
            zoo().to_str().unwrap(),
            "--pruners",
            pruner,
            "--compression",
            "2",
            "--opt",
            &format!("{pruner}.calib_data=moments"),
            "--out",
            run.path().join("refused").to_str().unwrap(),
        ]);
        hyperprune_tests::one_line_error(&o, &[expected, "calib_data=moments"]);
    }
}
