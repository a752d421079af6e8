//! Model zoos trained by the burn engine: `hyperprune_core::zoo::train_zoo` drives an engine,
//! and core names none, so the tests that train a zoo run here, on the reference engine.

use std::path::Path;

use hyperprune_core::dataset;
use hyperprune_core::engine::Optimizer;
use hyperprune_core::zoo::{Split, Zoo, ZooEvent, ZooMeta, ZooSettings, available_memory, plan, train_zoo};
use hyperprune_core::{ArchSpec, preset};
use hyperprune_engine_burn::FlexEngine;

fn digits_plan(members: usize) -> ZooMeta {
    let settings = ZooSettings {
        epochs: 4,
        batch_size: 32,
        optimizer: Optimizer::Adam,
        lr: 3e-3,
        vary: vec!["seed".into(), "init".into()],
        seed: 11,
        split: [0.5, 0.0, 0.5],
        shared_data_order: false,
    };
    plan("t", &preset("cnn-digits").unwrap(), "digits", "burn-flex", settings, members).unwrap()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("members"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn same_seed_gives_byte_identical_members_and_an_interrupted_zoo_resumes() {
    let data = dataset::load("digits", &Default::default()).unwrap();
    let engine = FlexEngine::new();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let zoo = train_zoo(a.path(), digits_plan(4), &engine, &data, 2, &mut |_| {}).unwrap();
    assert_eq!(zoo.members(Split::All).len(), 4);
    // Chance is 10%; a few epochs of Adam put every activation well above it.
    let accs: Vec<f64> = zoo.members(Split::All).iter().map(|m| m.test_accuracy.unwrap()).collect();
    assert!(accs.iter().all(|&a| a > 0.5), "{accs:?}");
    let fa = files(a.path());
    assert!(fa.windows(2).all(|w| w[0].1 != w[1].1), "members with different seeds differ");
    train_zoo(b.path(), digits_plan(4), &engine, &data, 2, &mut |_| {}).unwrap();
    assert_eq!(files(a.path()), files(b.path()), "same seed, byte-identical member files");

    // Interrupt B after its first chunk: the second chunk's members are not recorded
    // and one of their files is missing, as if the run was killed mid-write.
    let mut meta = Zoo::open(b.path()).unwrap().meta().clone();
    for m in &mut meta.members[2..] {
        m.test_accuracy = None;
    }
    std::fs::remove_file(b.path().join(&meta.members[3].file)).unwrap();
    Zoo::new(b.path(), meta).save_meta().unwrap();
    let mut retrained = Vec::new();
    train_zoo(b.path(), digits_plan(4), &engine, &data, 2, &mut |e| {
        if let ZooEvent::MemberDone { id, .. } = e {
            retrained.push(id);
        }
    })
    .unwrap();
    assert_eq!(retrained, vec!["0002", "0003"], "finished members are not retrained");
    assert_eq!(files(a.path()), files(b.path()));
}

#[test]
fn a_zero_batch_size_is_refused_before_the_folder_is_created() {
    let data = dataset::load("digits", &Default::default()).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("zoo");
    let mut meta = digits_plan(2);
    meta.settings.batch_size = 0;
    let err = train_zoo(&dir, meta, &FlexEngine::new(), &data, 2, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("batch size must be at least 1"), "{err}");
    assert!(!dir.exists(), "a refused run leaves no folder behind");
}

/// An architecture of about 0.6 trillion parameters: its chunk estimate exceeds any
/// machine's memory, and allocating it would abort the process.
fn huge_plan() -> ZooMeta {
    let arch = ArchSpec::from_json(
        r#"{"name":"huge","input":[1,8,8],"classes":10,"layers":[{"type":"flatten"},
            {"type":"linear","out_features":8589934592},{"type":"relu"},{"type":"linear","out_features":10}]}"#,
    )
    .unwrap();
    let settings = ZooSettings { batch_size: 32, ..digits_plan(1).settings };
    plan("huge", &arch, "digits", "burn-flex", settings, 2).unwrap()
}

#[test]
fn a_chunk_too_large_for_memory_is_refused_in_one_line_before_anything_is_written() {
    if available_memory().is_none() {
        eprintln!("skipped: the available memory is unknown on this machine, so no check is made");
        return;
    }
    let data = dataset::load("digits", &Default::default()).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("zoo");
    let err = train_zoo(&dir, huge_plan(), &FlexEngine::new(), &data, 2, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("training 2 'huge' members together at batch size 32 needs about"), "{err}");
    assert!(err.contains("GiB is available") && err.contains("--chunk") && err.contains("--batch-size"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.exists(), "a refused run leaves no folder behind");
}

#[test]
fn a_zoo_with_other_settings_is_not_overwritten() {
    let data = dataset::load("digits", &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = FlexEngine::new();
    train_zoo(dir.path(), digits_plan(1), &engine, &data, 1, &mut |_| {}).unwrap();
    let err = train_zoo(dir.path(), digits_plan(2), &engine, &data, 1, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("zoo.json") && err.contains("member count"), "{err}");
}
