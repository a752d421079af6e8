//! The standing adversarial suite: every command of the CLI against a corpus of bad inputs
//! (malformed files, values that mean nothing, outputs that would overwrite inputs, stale
//! or foreign state). Each case must exit with code 2, print exactly one line on stderr that
//! names the file or option at fault, and leave every file as it was: nothing created,
//! nothing changed, nothing cut. `docs/RELIABILITY.md` counts the cases per command.
//!
//! The corpus lives in one folder built once per test process; each case runs with that
//! folder as its working directory and the folder is compared, file by file, before and after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hyperprune_tests::{digits_zoo, jsonl, root, text};

/// One bad command line and what its one error line must contain.
struct Case {
    /// The subcommand, for the tally (`zoo train`, `bench merge`, ...).
    command: &'static str,
    args: Vec<String>,
    expected: Vec<&'static str>,
}

fn case(command: &'static str, args: &str, expected: &[&'static str]) -> Case {
    Case { command, args: args.split_whitespace().map(String::from).collect(), expected: expected.to_vec() }
}

/// Every file under `dir` with a hash of its bytes: the before/after picture of a case.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable corpus folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path.clone());
                files.insert(path, (0, 0));
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                // FNV-1a: a changed byte changes the hash.
                let hash =
                    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3));
                files.insert(path, (bytes.len() as u64, hash));
            }
        }
    }
    files
}

/// The corpus: a small digits zoo, a bench run, a fitted hypernetwork state, and the bad
/// files made from them.
fn corpus() -> PathBuf {
    let zoo = digits_zoo("zoo", 4, 1, "0.5,0.25,0.25");
    let dir = zoo.parent().expect("the zoo's temporary folder").to_path_buf();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(hyperprune_tests::release_dir().join("hyperprune"))
            .args(args)
            .current_dir(&dir)
            .env_remove("HYPERPRUNE_PLUGIN_PATH")
            .output()
            .expect("hyperprune runs");
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    let member = std::fs::read(zoo.join("members/0000.safetensors")).unwrap();
    write("model.safetensors", &member);
    write("truncated.safetensors", &member[..member.len() - 100]);
    write("garbage.safetensors", b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header");
    write("bad.json", b"{\"name\": \"x\", \"layers\": [");
    write(
        "huge.json",
        br#"{"name":"huge","input":[1,8,8],"classes":10,"layers":[{"type":"flatten"},
            {"type":"linear","out_features":1073741824},{"type":"relu"},{"type":"linear","out_features":10}]}"#,
    );
    run(&[
        "prune",
        "--model",
        "model.safetensors",
        "--pruner",
        "magnitude",
        "--sparsity",
        "0.5",
        "--out",
        "p.safetensors",
        "-q",
    ]);
    let masks = std::fs::read(dir.join("p.masks.safetensors")).unwrap();
    let header = u64::from_le_bytes(masks[..8].try_into().unwrap()) as usize;
    for (name, value) in [("two.masks.safetensors", 2u8), ("ff.masks.safetensors", 255)] {
        let mut bad = masks.clone();
        bad[8 + header] = value; // the first entry of the first mask
        write(name, &bad);
    }
    // Graph specs: a one-block residual network with one thing wrong in each.
    let graph = |sum_inputs: &str, conv1_inputs: &str, kind: &str| {
        format!(
            r#"{{"name": "g", "input": [1, 8, 8], "classes": 10, "layers": [
            {{"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "padding": 1{conv1_inputs}}},
            {{"type": "batchnorm2d", "name": "bn1"}}, {{"type": "relu", "name": "relu"}},
            {{"type": "conv2d", "name": "conv2", "out_channels": 4, "kernel": 3, "padding": 1}},
            {{"type": "batchnorm2d", "name": "bn2"}},
            {{"type": "add", "name": "sum", "inputs": {sum_inputs}}}, {{"type": "{kind}", "name": "out"}},
            {{"type": "global_avgpool"}}, {{"type": "flatten"}}, {{"type": "linear", "out_features": 10}}]}}"#
        )
    };
    write("graph-dangling.json", graph(r#"["bn2", "nowhere"]"#, "", "relu").as_bytes());
    write("graph-cycle.json", graph(r#"["bn2", "relu"]"#, r#", "inputs": ["out"]"#, "relu").as_bytes());
    write("graph-add.json", graph(r#"["bn2", "input"]"#, "", "relu").as_bytes());
    write("graph-unknown.json", graph(r#"["bn2", "relu"]"#, "", "swish").as_bytes());
    write("graph-unused.json", graph(r#"["conv2", "relu"]"#, "", "relu").as_bytes());
    // An IDX folder of four files that are not IDX.
    for name in
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    {
        write(&format!("idx-bad/{name}"), b"\x00\x00\x08\x03not idx");
    }
    // Zoos: a corrupt zoo.json, and one whose dataset does not match its members.
    write("zoo-bad/zoo.json", b"{\"format\": 1, \"members\": [");
    let meta = std::fs::read_to_string(zoo.join("zoo.json")).unwrap();
    std::fs::create_dir_all(dir.join("zoo-mnist")).unwrap();
    for entry in std::fs::read_dir(zoo.join("members")).unwrap() {
        let entry = entry.unwrap();
        write(
            &format!("zoo-mnist/members/{}", entry.file_name().to_string_lossy()),
            &std::fs::read(entry.path()).unwrap(),
        );
    }
    write("zoo-mnist/zoo.json", meta.replace("\"dataset\": \"digits\"", "\"dataset\": \"mnist\"").as_bytes());
    // Runs: A with rows; one with an impossible retention, one with a sparsity of 1.5, one
    // that is not UTF-8, one whose last line is torn.
    run(&["bench", "--zoo", "zoo", "--out", "A", "--pruners", "magnitude,random", "--compression", "2,4", "-q"]);
    let rows = jsonl(&dir.join("A/results.jsonl"));
    let spoil = |field: &str, value: f64| {
        let mut lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        let mut first = rows[0].clone();
        first[field] = value.into();
        lines[0] = first.to_string();
        lines.join("\n") + "\n"
    };
    write("C/results.jsonl", spoil("retention", 5.0).as_bytes());
    write("E/results.jsonl", spoil("requested_sparsity", 1.5).as_bytes());
    write("D/results.jsonl", b"\xff\xfe{\"zoo\"}\n");
    let torn = std::fs::read_to_string(dir.join("A/results.jsonl")).unwrap() + "{\"zoo\": \"zoo\", \"memb";
    write("T/results.jsonl", torn.as_bytes());
    // States: one fitted, one with 0xFF bytes for weights, and a stale checkpoint.
    run(&["fit", "--pruner", "hypernet", "--zoo", "zoo", "--out", "state/h.bin", "--opt", "steps=5", "-q"]);
    let state = std::fs::read(dir.join("state/h.bin")).unwrap();
    let payload = state.iter().skip(19).position(|b| *b == b'\n').unwrap() + 20; // after the host's header line
    let st_header = u64::from_le_bytes(state[payload..payload + 8].try_into().unwrap()) as usize;
    let tensors: serde_json::Value = serde_json::from_slice(&state[payload + 8..payload + 8 + st_header]).unwrap();
    let net = tensors.as_object().unwrap().iter().find(|(k, _)| k.starts_with("net.")).expect("a network tensor").1;
    let start = payload + 8 + st_header + net["data_offsets"][0].as_u64().unwrap() as usize;
    let mut nan = state.clone();
    nan[start..start + 4].copy_from_slice(&[0xFF; 4]);
    write("state/nan.bin", &nan);
    write(
        "stale/h.bin.checkpoint",
        b"hyperprune-checkpoint/1\n{\"fit\":{\"pruner\":\"hypernet\",\"pruner_version\":\"0.1.0\",\"options\":{},\
          \"fit_zoo\":{\"name\":\"other\",\"dataset\":\"digits\",\"archs\":[\"cnn-digits\"],\"train_members\":2,\
          \"train_hash\":\"0000000000000000\"}},\"curve_rows\":0}\nplugin bytes",
    );
    dir
}

fn cases() -> Vec<Case> {
    let mnist = root().join("tests/data/mnist-10k");
    let mnist = mnist.to_str().expect("utf-8 path");
    let prune = "prune --model model.safetensors --pruner magnitude --out new.safetensors";
    let prune_other = "prune --pruner magnitude --out new.safetensors --sparsity 0.5 --model";
    let bench = "bench --zoo zoo --out new-run --pruners magnitude";
    let fit = "fit --pruner hypernet --zoo zoo --out new-state/h.bin --opt steps=5";
    let zoo_train = "zoo train --out new-zoo";
    let throughput = "bench-engine throughput --arch cnn-digits --batch 8 --images 64 --gradients 1 --threads 1";
    vec![
        case("plugins info", "plugins info nope", &["unknown pruner 'nope'"]),
        // prune
        case("prune", &format!("{prune_other} truncated.safetensors"), &["truncated.safetensors"]),
        case("prune", &format!("{prune_other} garbage.safetensors"), &["garbage.safetensors"]),
        case("prune", &format!("{prune_other} missing.safetensors"), &["missing.safetensors", "not found"]),
        case(
            "prune",
            "prune --model model.safetensors --pruner magnitude --sparsity 0.5 --out model.safetensors",
            &["--out would overwrite the --model"],
        ),
        case(
            "prune",
            "prune --model model.safetensors --pruner magnitude --sparsity 0.5 --out ./model.safetensors",
            &["--out would overwrite"],
        ),
        case("prune", &format!("{prune} --sparsity 0.5 --pattern 0:4"), &["--pattern '0:4'", "1 <= N < M"]),
        case("prune", &format!("{prune} --sparsity 0.5 --pattern 4:4"), &["--pattern '4:4'"]),
        case(
            "prune",
            &format!("{prune} --sparsity 0.5 --opt normalize=none --opt normalize=layer-l2"),
            &["'normalize' is given twice"],
        ),
        case("prune", &format!("{prune} --sparsity NaN"), &["sparsity must be in [0, 1)"]),
        case("prune", &format!("{prune} --sparsity 1.5"), &["sparsity must be in [0, 1)"]),
        case("prune", &format!("{prune} --sparsity 0.5 --arch bad.json"), &["bad.json"]),
        case("prune", &format!("{prune} --sparsity 0.5 --calib-samples 0"), &["--calib-samples"]),
        case("prune", &format!("{prune} --sparsity 0.5 --repeat 0"), &["--repeat"]),
        case("prune", &format!("{prune} --sparsity 0.5 --isolate worker --timeout NaN"), &["--timeout"]),
        case("prune", &format!("{prune} --sparsity 0.5 --isolate worker --worker-memory 0"), &["--worker-memory"]),
        case(
            "prune",
            "prune --model model.safetensors --pruner hypernet --opt state=state/nan.bin --sparsity 0.5 --out new.safetensors",
            &["state/nan.bin", "NaN", "expected finite numbers"],
        ),
        case(
            "prune",
            "prune --model model.safetensors --pruner hypernet --opt state=state/h.bin --opt units_q=NaN --sparsity 0.5 \
             --out new.safetensors",
            &["'units_q' expects a finite number"],
        ),
        // eval
        case(
            "eval",
            "eval --model model.safetensors --masks two.masks.safetensors",
            &["two.masks.safetensors", "the value 2"],
        ),
        case(
            "eval",
            "eval --model model.safetensors --masks ff.masks.safetensors",
            &["ff.masks.safetensors", "the value 255"],
        ),
        case("eval", "eval --model garbage.safetensors", &["garbage.safetensors"]),
        case("eval", "eval --model model.safetensors --dataset mnist --data-dir idx-bad", &["idx-bad"]),
        case("eval", "eval --model model.safetensors --dataset nope", &["nope"]),
        case("eval", "eval --model model.safetensors --masks truncated.safetensors", &["truncated.safetensors"]),
        // zoo train
        case("zoo train", &format!("{zoo_train} --members 0"), &["--members"]),
        case("zoo train", &format!("{zoo_train} --members 18446744073709551615"), &["members need about", "GiB"]),
        case("zoo train", &format!("{zoo_train} --members 1000000000"), &["members need about", "GiB"]),
        case("zoo train", &format!("{zoo_train} --split NaN,0.5,0.5"), &["--split", "finite"]),
        case("zoo train", &format!("{zoo_train} --split 0.5,0.5,0.5"), &["sum to 1"]),
        case("zoo train", &format!("{zoo_train} --split 0.5,0.5"), &["--split needs three fractions"]),
        case("zoo train", &format!("{zoo_train} --lr NaN"), &["--lr", "finite"]),
        case("zoo train", &format!("{zoo_train} --lr -1"), &["--lr", "above 0"]),
        case("zoo train", &format!("{zoo_train} --lr inf"), &["--lr"]),
        case("zoo train", &format!("{zoo_train} --epochs 0"), &["--epochs"]),
        case("zoo train", &format!("{zoo_train} --batch-size 0"), &["--batch-size"]),
        case("zoo train", &format!("{zoo_train} --chunk 0"), &["--chunk"]),
        case("zoo train", &format!("{zoo_train} --optimizer sgd --momentum 1.5"), &["--momentum"]),
        case("zoo train", &format!("{zoo_train} --arch huge.json"), &["GiB"]),
        case("zoo train", &format!("{zoo_train} --arch bad.json"), &["bad.json"]),
        case("zoo train", &format!("{zoo_train} --vary nonsense"), &["cannot vary 'nonsense'"]),
        case("zoo train", &format!("{zoo_train} --arch mlpnet --dataset mnist --data-dir idx-bad"), &["idx-bad"]),
        case("zoo train", &format!("{zoo_train} --arch lenet5"), &["'lenet5'", "[1, 28, 28]"]),
        case(
            "zoo train",
            &format!("{zoo_train} --arch graph-dangling.json"),
            &["graph-dangling.json", "node 'sum': field 'inputs' names 'nowhere'"],
        ),
        case("zoo train", &format!("{zoo_train} --arch resnet:depth=9"), &["resnet:depth=9", "6n + 2"]),
        case("zoo train", &format!("{zoo_train} --arch resnet-s"), &["'resnet-s' takes [1, 28, 28] inputs"]),
        case(
            "prune",
            &format!("{prune} --sparsity 0.5 --arch graph-cycle.json"),
            &["graph-cycle.json", "node 'conv1': field 'inputs' makes a cycle"],
        ),
        case(
            "prune",
            &format!("{prune} --sparsity 0.5 --arch graph-add.json"),
            &["graph-add.json", "node 'sum': field 'inputs': cannot add"],
        ),
        case(
            "eval",
            "eval --model model.safetensors --arch graph-unknown.json",
            &["graph-unknown.json", "unknown variant `swish`"],
        ),
        case(
            "bench-engine throughput",
            "bench-engine throughput --arch graph-unused.json",
            &["graph-unused.json", "node 'bn2': no later layer reads its output"],
        ),
        // zoo show / merge
        case("zoo show", "zoo show zoo-bad", &["zoo-bad/zoo.json"]),
        case("zoo show", "zoo show missing-zoo", &["missing-zoo"]),
        case("zoo merge", "zoo merge --out zoo zoo zoo-mnist", &["already exists"]),
        case("zoo merge", "zoo merge --out new-zoo zoo zoo-bad", &["zoo-bad/zoo.json"]),
        // bench
        case("bench", &format!("{bench} --jobs 0"), &["--jobs"]),
        case("bench", &format!("{bench} --compression 2,2"), &["--compression lists 2 twice"]),
        case("bench", &format!("{bench} --sparsity 0.5,0.5"), &["--sparsity lists 0.5 twice"]),
        case("bench", &format!("{bench} --compression 0.5"), &["--compression"]),
        case("bench", &format!("{bench} --compression NaN"), &["--compression"]),
        case("bench", &format!("{bench} --sparsity 1.5"), &["--sparsity"]),
        case("bench", &format!("{bench} --members 0"), &["--members"]),
        case("bench", &format!("{bench} --calib-samples 0"), &["--calib-samples"]),
        case("bench", &format!("{bench} --timeout NaN"), &["--timeout"]),
        case("bench", &format!("{bench} --worker-memory 0"), &["--worker-memory"]),
        case(
            "bench",
            &format!("{bench} --opt magnitude.normalize=none --opt magnitude.normalize=layer-l2"),
            &["'normalize' is given twice"],
        ),
        case("bench", &format!("{bench} --shard 3/2"), &["3/2"]),
        case(
            "bench",
            "bench --zoo zoo --out new-run --pruners hypernet --opt hypernet.state=missing.bin",
            &["missing.bin"],
        ),
        case(
            "bench",
            "bench --zoo zoo --out new-run --pruners hypernet --opt hypernet.state=state/nan.bin",
            &["state/nan.bin", "NaN"],
        ),
        case(
            "bench",
            &format!("bench --zoo zoo-mnist --out new-run --pruners magnitude --data-dir {mnist}"),
            &["zoo-mnist/zoo.json", "field 'dataset'"],
        ),
        case("bench", "bench --zoo zoo-bad --out new-run --pruners magnitude", &["zoo-bad/zoo.json"]),
        case("bench", "bench --zoo zoo --out D --pruners magnitude", &["D/results.jsonl", "UTF-8"]),
        case("bench", "bench --zoo zoo --out C --pruners magnitude", &["C/results.jsonl:1", "field 'retention'"]),
        // bench merge
        case("bench merge", "bench merge --out new-run missing-run", &["missing-run/results.jsonl", "not found"]),
        case("bench merge", "bench merge --out new-run A C", &["C/results.jsonl:1", "field 'retention'"]),
        case("bench merge", "bench merge --out new-run A D", &["D/results.jsonl", "UTF-8"]),
        case("bench merge", "bench merge --out A E", &["E/results.jsonl:1", "field 'requested_sparsity'"]),
        // report
        case("report", "report C", &["C/results.jsonl:1", "field 'retention' is 5"]),
        case("report", "report E", &["E/results.jsonl:1", "field 'requested_sparsity' is 1.5"]),
        case("report", "report D", &["D/results.jsonl", "UTF-8"]),
        case("report", "report missing-run", &["missing-run"]),
        // fit
        case(
            "fit",
            "fit --pruner hypernet --zoo zoo --out stale/h.bin",
            &["stale/h.bin.checkpoint", "a checkpoint of another fit", "zoo 'other'"],
        ),
        case("fit", "fit --pruner hypernet --zoo zoo --out zoo/zoo.json", &["--out would overwrite the zoo file"]),
        case(
            "fit",
            "fit --pruner hypernet --zoo zoo --out zoo/members/0000.safetensors",
            &["would overwrite the zoo member"],
        ),
        case("fit", &format!("{fit} --opt lr=NaN"), &["'lr' expects a finite number"]),
        case("fit", &format!("{fit} --opt steps=3"), &["'steps' is given twice"]),
        case("fit", &format!("{fit} --train-members 0"), &["--train-members"]),
        case("fit", &format!("{fit} --calib-samples 0"), &["--calib-samples"]),
        case("fit", "fit --pruner magnitude --zoo zoo --out new-state/m.bin", &["is not learnable"]),
        case("fit", "fit --pruner hypernet --zoo zoo-bad --out new-state/h.bin", &["zoo-bad/zoo.json"]),
        // bench-engine
        case("bench-engine throughput", &format!("{throughput} --members 0"), &["--members"]),
        case("bench-engine throughput", &format!("{throughput} --batch 0"), &["--batch"]),
        case("bench-engine throughput", "bench-engine throughput --arch cnn-digits --threads 0", &["--threads"]),
        case("bench-engine throughput", "bench-engine throughput --arch cnn-digits --images 0", &["--images"]),
        case("bench-engine throughput", "bench-engine throughput --arch cnn-digits --gradients 0", &["--gradients"]),
        case(
            "bench-engine throughput",
            "bench-engine throughput --arch huge.json --members 1 --batch 1",
            &["'huge'", "GiB"],
        ),
        case("bench-engine throughput", "bench-engine throughput --arch bad.json", &["bad.json"]),
        case("bench-engine agree", "bench-engine agree --zoo zoo --tolerance NaN", &["--tolerance"]),
        case("bench-engine agree", "bench-engine agree --zoo zoo --tolerance -1", &["--tolerance"]),
        case("bench-engine agree", "bench-engine agree --zoo zoo --samples 0", &["--samples"]),
        case("bench-engine agree", "bench-engine agree --zoo zoo-bad", &["zoo-bad/zoo.json"]),
        // demo
        case("demo", "demo --out new-demo --members 0", &["--members"]),
        case("demo", "demo --out new-demo --jobs 0", &["--jobs"]),
        case("demo", "demo --out new-demo --epochs 0", &["--epochs"]),
    ]
}

#[test]
fn every_command_refuses_bad_input_in_one_line_with_exit_2_and_changes_no_file() {
    let dir = corpus();
    let cases = cases();
    let mut failures = Vec::new();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &cases {
        let before = snapshot(&dir);
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let o = std::process::Command::new(hyperprune_tests::release_dir().join("hyperprune"))
            .args(&args)
            .current_dir(&dir)
            .env_remove("HYPERPRUNE_PLUGIN_PATH")
            .env_remove("RUST_LOG")
            .output()
            .expect("hyperprune runs");
        let (_, stderr) = text(&o);
        let after = snapshot(&dir);
        let mut wrong = Vec::new();
        if o.status.code() != Some(2) {
            wrong.push(format!("exit {:?}", o.status.code()));
        }
        if stderr.trim().lines().count() != 1 {
            wrong.push(format!("{} lines on stderr", stderr.trim().lines().count()));
        }
        wrong.extend(case.expected.iter().filter(|e| !stderr.contains(*e)).map(|e| format!("no '{e}'")));
        if before != after {
            let changed: Vec<String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .map(|k| k.strip_prefix(&dir).unwrap_or(k).display().to_string())
                .collect();
            wrong.push(format!("files created or changed: {changed:?}"));
            // Put the corpus back for the next case.
            for path in changed.iter().map(|c| dir.join(c)).filter(|p| !before.contains_key(p)) {
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "hyperprune {}: {}\n    stderr: {}",
                case.args.join(" "),
                wrong.join(", "),
                stderr.trim()
            ));
        }
        *tally.entry(case.command).or_default() += 1;
    }
    println!("adversarial cases by command ({} in all):", cases.len());
    for (command, n) in &tally {
        println!("  {command:<26} {n}");
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn merging_into_a_run_keeps_its_rows_and_leaves_the_inputs_as_they_were() {
    let dir = corpus();
    let before = std::fs::read(dir.join("T/results.jsonl")).unwrap();
    let own = jsonl(&dir.join("A/results.jsonl")).len();
    let o = std::process::Command::new(hyperprune_tests::release_dir().join("hyperprune"))
        .args(["bench", "--zoo", "zoo", "--out", "B", "--pruners", "magnitude", "--compression", "8", "-q"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let other = jsonl(&dir.join("B/results.jsonl")).len();
    let merge = |args: &[&str]| {
        std::process::Command::new(hyperprune_tests::release_dir().join("hyperprune"))
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let o = merge(&["bench", "merge", "--out", "A", "B", "T"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("its own rows included"), "{:?}", text(&o));
    // A's rows, B's rows, and T's complete rows (the same keys as A's: counted once).
    assert_eq!(jsonl(&dir.join("A/results.jsonl")).len(), own + other);
    assert_eq!(std::fs::read(dir.join("T/results.jsonl")).unwrap(), before, "an input's torn line is not cut");
    // Merging a run into itself changes no row.
    let o = merge(&["bench", "merge", "--out", "B", "B"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(jsonl(&dir.join("B/results.jsonl")).len(), other);
}
