//! `hyperprune demo`: the whole pipeline on the embedded digits data, no set-up: train a
//! small `cnn-digits` zoo (half train, an eighth val, the rest test members), bench every
//! installed pruner at compression 2–32 on its test members (learned pruners, such as the
//! hypernetwork, fit on its train members and select on its val members first), bench the
//! hypernetwork again with `refine=25`, print the table and the path of the HTML report.

use crate::cli::{BenchArgs, DataArgs, DemoArgs, GlobalArgs, OptimizerArg, ScopeArg, ZooTrainArgs};

/// Runs the demo. Rerunning it reuses the trained zoo and the finished rows.
///
/// # Errors
/// Whatever zoo training or the bench reports.
pub fn run(global: &GlobalArgs, args: DemoArgs) -> anyhow::Result<()> {
    let zoo_dir = args.out.join("digits-cnn");
    if !global.quiet {
        println!(
            "1/2 training a zoo of {} cnn-digits members on the embedded digits data -> {}",
            args.members,
            zoo_dir.display()
        );
    }
    super::zoo::train(
        global,
        ZooTrainArgs {
            arch: "cnn-digits".into(),
            data: DataArgs { dataset: "digits".into(), data_dir: None },
            members: args.members,
            epochs: args.epochs,
            batch_size: 32,
            lr: 3e-3,
            optimizer: OptimizerArg::Adam,
            momentum: 0.9,
            vary: vec!["seed".into(), "init".into(), "lr".into(), "weight-decay".into()],
            split: vec![0.5, 0.125, 0.375],
            seed: args.seed,
            out: zoo_dir.clone(),
            chunk: 24,
            shared_data_order: false,
            exec: args.exec.clone(),
        },
    )?;
    if !global.quiet {
        println!(
            "2/2 fitting the learnable pruners on the train members, then benchmarking every installed pruner on \
             the test members at compression 2, 4, 8, 16, 32 (and the hypernetwork again with refine=25)"
        );
    }
    let bench = |pruners: &str, options: Vec<String>, no_summary: bool| BenchArgs {
        command: None,
        zoo: Some(zoo_dir.clone()),
        split: "test".into(),
        pruners: vec![pruners.into()],
        compression: vec![],
        sparsity: vec![],
        calib_samples: 512,
        options,
        seed: args.seed,
        scope: ScopeArg::Global,
        out: Some(args.out.clone()),
        members: None,
        shard: None,
        jobs: args.jobs,
        data_dir: None,
        exec: args.exec.clone(),
        isolate: Default::default(),
        timeout: 600.0,
        worker_memory: None,
        bn: Default::default(),
        stop_after: None,
        no_summary,
    };
    // The hypernetwork's default refines its mask by one step where its state stores input
    // draws (as the demo's does); named here, so that the table says which row is which.
    super::bench::run(global, bench("all", vec!["hypernet.refine=1".into()], true))?;
    // The same fitted state (`refine` acts at prune time only), its masks refined by 25
    // distillation steps on the input draws it stores: a second hypernet row.
    super::bench::run(global, bench("hypernet", vec!["hypernet.refine=25".into()], false))
}
