//! Command-line arguments (clap derive). Parsing only; the work is in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// One-shot pruning of trained image classifiers, with pruners as plugins.
///
/// Pruners are shared libraries loaded at run time from the folder of this executable,
/// from $HYPERPRUNE_PLUGIN_PATH (a colon-separated list of folders or files) and from
/// every --plugin FILE.
#[derive(Debug, Parser)]
#[command(name = "hyperprune", version, about, long_about)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Load this plugin file as well (repeatable); it wins over a plugin of the same name
    /// found elsewhere.
    #[arg(long = "plugin", value_name = "FILE", global = true)]
    pub plugins: Vec<PathBuf>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of listing commands.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// A table.
    #[default]
    Table,
    /// JSON.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List installed pruner plugins, or show one's options.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Prune one model file with one pruner and write the pruned model and its masks.
    Prune(PruneArgs),
    /// Train, inspect and list model zoos (populations of trained CNNs).
    #[command(subcommand)]
    Zoo(ZooCommand),
    /// Benchmark pruners head-to-head over a zoo's members and sparsity levels; resumable.
    Bench(BenchArgs),
    /// Serve a supervisor's plugin calls over stdin/stdout (internal; started by bench).
    #[command(hide = true)]
    Worker,
    /// Fit a learnable pruner on a zoo's train members and save its state, for
    /// `prune --opt state=FILE` and `bench --opt PRUNER.state=FILE`.
    #[command(long_about = FIT_ABOUT)]
    Fit(FitArgs),
    /// Accuracy and loss of one model (optionally masked) on a dataset's test split.
    Eval(EvalArgs),
    /// Train a small zoo on the embedded digits data and bench every installed pruner on
    /// it: the whole pipeline in a few minutes, no set-up.
    Demo(DemoArgs),
    /// Summarise a bench run: a table, SVG plots and one self-contained HTML page, written
    /// into the run folder.
    Report(ReportArgs),
    /// Measure engine throughput (training, inference, per-sample gradients), or check
    /// that an engine/device agrees with the CPU engine on a zoo's members.
    #[command(subcommand)]
    BenchEngine(BenchEngineCommand),
}

/// `hyperprune bench-engine ...`
#[derive(Debug, Subcommand)]
pub enum BenchEngineCommand {
    /// Training member-images/s, inference images/s, test-set evaluation time and the time
    /// of 1,000 per-sample gradients, for each architecture and setting.
    ///
    /// TRAIN is the whole training call; STEADY leaves out its first step, which also sets
    /// up the engine's buffers (as PyTorch benchmarks leave out warm-up steps).
    Throughput(ThroughputArgs),
    /// Logits and per-sample gradients of an engine/device against the CPU engine on a
    /// zoo's members; fails when they differ by more than the tolerance.
    Agree(AgreeArgs),
}

/// `hyperprune bench-engine throughput`
#[derive(Debug, Args)]
pub struct ThroughputArgs {
    /// Architectures (presets or spec files).
    #[arg(long, value_delimiter = ',', default_value = "cnn-s,lenet5,mlpnet")]
    pub arch: Vec<String>,
    /// Dataset for images (`random` for generated images of the architecture's shape).
    #[arg(long, default_value = "random")]
    pub dataset: String,
    /// Folder with the dataset's files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Members trained together in one call.
    #[arg(long, value_delimiter = ',', default_value = "1", allow_negative_numbers = true, value_parser = crate::values::count)]
    pub members: Vec<usize>,
    /// Mini-batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "64,256", allow_negative_numbers = true, value_parser = crate::values::count)]
    pub batch: Vec<usize>,
    /// Thread counts (CPU engine only).
    #[arg(long, value_delimiter = ',', default_value = "1,2", allow_negative_numbers = true, value_parser = crate::values::count)]
    pub threads: Vec<usize>,
    /// Training images per timed run (one epoch over this many).
    #[arg(long, default_value_t = 8192, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub images: usize,
    /// Per-sample gradients to time.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub gradients: usize,
    /// Where networks run.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `hyperprune bench-engine agree`
#[derive(Debug, Args)]
pub struct AgreeArgs {
    /// The zoo whose members are compared.
    #[arg(long)]
    pub zoo: PathBuf,
    /// Members to compare.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub members: usize,
    /// Samples (from the test split) for logits and per-sample gradients.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub samples: usize,
    /// Largest allowed relative difference (max |a-b| / max |a|).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = crate::values::non_negative)]
    pub tolerance: f64,
    /// Folder with the dataset's files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The engine and device compared with the CPU engine.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `hyperprune report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The bench run folder.
    pub run: PathBuf,
}

/// `hyperprune bench`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `merge`, or nothing to run a bench.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// The zoo to benchmark on.
    #[arg(long)]
    pub zoo: Option<PathBuf>,
    /// Which members: test (the default, never seen by learned pruners), val, train or all.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Pruners, comma separated, or `all` for every installed one.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub pruners: Vec<String>,
    /// Compression ratios (prunable weights / remaining ones); default 2,4,8,16,32.
    #[arg(long, value_delimiter = ',', conflicts_with = "sparsity", allow_negative_numbers = true, value_parser = crate::values::compression)]
    pub compression: Vec<f64>,
    /// Sparsities instead of compression ratios.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = crate::values::fraction)]
    pub sparsity: Vec<f64>,
    /// Calibration samples (from the train split) for data-aware pruners that ask for the
    /// default.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = crate::values::count_u64)]
    pub calib_samples: u64,
    /// Pruner option `pruner.name=value` (repeatable).
    #[arg(long = "opt", value_name = "PRUNER.NAME=VALUE")]
    pub options: Vec<String>,
    /// Seed of every pruning request.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Global or per-layer allocation.
    #[arg(long, value_enum, default_value_t)]
    pub scope: ScopeArg,
    /// Run folder: results.jsonl, run.json and the report go here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Use only the first K members of the split.
    #[arg(long, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub members: Option<usize>,
    /// Run only the deterministic slice i/n of the tasks (join with `bench merge`).
    #[arg(long)]
    pub shard: Option<String>,
    /// Worker threads pruning in parallel.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub jobs: usize,
    /// Folder with the dataset's files, if the zoo's dataset needs one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where networks run.
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Where plugin `prune` calls run: `worker` (a separate process per pruner that is
    /// killed and replaced when a plugin aborts, crashes, hangs or exhausts memory; the
    /// task becomes an error row) or `none` (in this process: a little faster, but a
    /// crashing plugin ends the bench).
    #[arg(long, value_enum, default_value_t)]
    pub isolate: IsolateArg,
    /// Longest one `prune` call may take under `--isolate worker`, seconds; a call that
    /// takes longer is killed and becomes an error row. Time the bench spends suspended
    /// (Ctrl-Z) does not count.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS", allow_negative_numbers = true, value_parser = crate::values::positive)]
    pub timeout: f64,
    /// Memory limit of each worker under `--isolate worker`, MiB (default: half of the
    /// machine's memory).
    #[arg(long, value_name = "MIB", allow_negative_numbers = true, value_parser = crate::values::count_u64)]
    pub worker_memory: Option<u64>,
    /// Batch normalisation statistics of the pruned networks.
    #[command(flatten)]
    pub bn: BnArgs,
    /// Stop after this many new rows (simulates an interrupted run; for tests).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Write the report but print no summary table (the demo's first of two benches).
    #[arg(skip)]
    pub no_summary: bool,
}

/// What happens to a pruned network's batch normalisation statistics before it is
/// evaluated (networks without batch normalisation are unaffected).
#[derive(Debug, Clone, Default, Args)]
pub struct BnArgs {
    /// Correct the batch normalisation statistics of the pruned network from its weights
    /// alone (data-free): per-channel means and variances propagated through the graph.
    #[arg(long)]
    pub bn_correct: bool,
    /// Re-estimate the batch normalisation statistics of the pruned network from N training
    /// images (no weight changes; counted as data use).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::values::count_u64)]
    pub bn_recalibrate: Option<u64>,
}

/// Where plugin calls run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum IsolateArg {
    /// In a supervised worker process.
    #[default]
    Worker,
    /// In this process.
    None,
}

const FIT_ABOUT: &str = "\
Fit a learnable pruner on a zoo's train members and save its state.

The pruner sees the zoo's train members (to learn from) and its val members (to choose \
settings); never its test members. A pruner that declared `fit_needs_data` gets the zoo's \
dataset through the data services: calibration samples from the dataset's train split, and \
`evaluate(Val)` on the held-out val slice of it.

Beside STATE_FILE (`DIR/NAME.EXT`) the fit writes `DIR/NAME.fit.jsonl`, one JSON line per \
curve row the pruner records, and while it runs `DIR/NAME.EXT.checkpoint`, the pruner's \
newest checkpoint. A fit that was interrupted resumes from that checkpoint when run again \
with the same --out; the checkpoint is deleted once the state is written.

Use the state with `hyperprune prune --pruner NAME --opt state=STATE_FILE ...` or \
`hyperprune bench --opt NAME.state=STATE_FILE ...`.";

/// `hyperprune fit`
#[derive(Debug, Args)]
pub struct FitArgs {
    /// The learnable pruner to fit (see `hyperprune plugins list`).
    #[arg(long)]
    pub pruner: String,
    /// The zoo whose train (and val) members it fits on.
    #[arg(long)]
    pub zoo: PathBuf,
    /// Where to write the fitted state; the curve and checkpoint go beside it.
    #[arg(long, value_name = "STATE_FILE")]
    pub out: PathBuf,
    /// Pruner option `name=value` (repeatable); see `hyperprune plugins info NAME`.
    #[arg(long = "opt", value_name = "NAME=VALUE")]
    pub options: Vec<String>,
    /// Calibration samples (from the dataset's train split, val slice excluded) for data
    /// services the pruner calls with the default.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = crate::values::count_u64)]
    pub calib_samples: u64,
    /// Folder with the zoo dataset's files, if it needs one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the fit; reaches the pruner as the `seed` option when it declares one.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fit on the first K train members only (in `zoo.json` order; for learning curves).
    /// The state's fit zoo records the subset.
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = crate::values::count)]
    pub train_members: Option<usize>,
    /// Where the fit runs: `none` (in this process, the default) or `worker` (a supervised
    /// process: a plugin that aborts or crashes is a one-line error; the checkpoint stays
    /// for resuming).
    #[arg(long, value_enum, default_value = "none")]
    pub isolate: IsolateArg,
    /// Memory limit of the worker under `--isolate worker`, MiB (default: half of the
    /// machine's memory).
    #[arg(long, value_name = "MIB", allow_negative_numbers = true, value_parser = crate::values::count_u64)]
    pub worker_memory: Option<u64>,
    /// Where networks run (the data services).
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `hyperprune bench merge`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Join the results of several runs (e.g. shards) into one run folder and report it.
    Merge {
        /// Output run folder.
        #[arg(long)]
        out: PathBuf,
        /// Run folders to join.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
}

/// Where networks run.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Execution engine: `cpu` (hand-written, batched; the CPU default) or `burn` (the
    /// reference; also the GPU engine).
    #[arg(long, value_enum, default_value_t)]
    pub engine: crate::engines::EngineKind,
    /// Device: `cpu`, `cuda` or `cuda:N` (needs a build with `--features cuda`; uses burn).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Which dataset, and where its files are.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Dataset name: digits (embedded), mnist, fashion-mnist, idx, cifar10.
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Folder with the dataset's files (searched before the default locations).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `hyperprune zoo ...`
#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// Train a zoo: sample member hyperparameters, train every member, split by member.
    /// Rerunning the same command resumes: finished members are not retrained.
    Train(Box<ZooTrainArgs>),
    /// Show a zoo's members and its accuracy distribution.
    Show {
        /// The zoo folder.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the zoos in a folder.
    List {
        /// Folder holding zoo folders.
        #[arg(default_value = "zoos")]
        root: PathBuf,
    },
    /// Join trained zoos of one dataset into one (e.g. several architectures, for a pruner
    /// that fits on mixed zoos): members keep their split, their ids become `ZOO:ID`, their
    /// files are copied.
    Merge {
        /// The new zoo folder (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The zoos to join, in order.
        #[arg(required = true, num_args = 2..)]
        zoos: Vec<PathBuf>,
    },
}

/// Optimiser choice on the command line.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum OptimizerArg {
    /// Adam.
    #[default]
    Adam,
    /// SGD with momentum (see --momentum).
    Sgd,
}

/// `hyperprune zoo train`
#[derive(Debug, Args)]
pub struct ZooTrainArgs {
    /// Architecture preset or spec JSON file.
    #[arg(long, default_value = "cnn-digits")]
    pub arch: String,
    /// Dataset.
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of members.
    #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub members: usize,
    /// Epochs per member.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub batch_size: usize,
    /// Base learning rate (members sample in [lr/10, lr] when `lr` is varied).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = crate::values::positive_f32)]
    pub lr: f32,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t)]
    pub optimizer: OptimizerArg,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true, value_parser = crate::values::fraction_f32)]
    pub momentum: f32,
    /// Hyperparameters that vary across members (comma list of seed, lr, activation, init,
    /// weight-decay, dropout).
    #[arg(long, value_delimiter = ',', default_value = "seed")]
    pub vary: Vec<String>,
    /// Fractions of members in train,val,test.
    #[arg(long, value_delimiter = ',', default_value = "0.7,0.15,0.15", allow_negative_numbers = true, value_parser = crate::values::share)]
    pub split: Vec<f64>,
    /// Zoo seed: hyperparameters, member seeds and the split derive from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Members trained per engine call (batched together); also the resume granularity.
    #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub chunk: usize,
    /// Give every member the same mini-batch order and dropout masks (the zoo seed's), so
    /// members differ only by initialisation and hyperparameters. By default a member's seed
    /// drives its data order too.
    #[arg(long)]
    pub shared_data_order: bool,
    /// Where networks run.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `hyperprune plugins ...`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every plugin found: name, version, SDK version, path, capabilities.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// One plugin's description, options (with defaults and docs) and examples.
    Info {
        /// Plugin name, as in `plugins list`.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// Mask scope.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ScopeArg {
    /// Rank all prunable weights together.
    #[default]
    Global,
    /// Prune every layer to the same sparsity.
    Layer,
}

/// Options that describe a pruning request, shared by `prune` and `bench`.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// Global or per-layer allocation of the pruned weights.
    #[arg(long, value_enum, default_value_t)]
    pub scope: ScopeArg,
    /// Mask pattern: `unstructured`, or `N:M` (keep N of every M consecutive weights of a
    /// row, e.g. 2:4; the sparsity is then 1 - N/M).
    #[arg(long, default_value = "unstructured")]
    pub pattern: String,
    /// Pruner option `name=value` (repeatable); see `hyperprune plugins info NAME`.
    #[arg(long = "opt", value_name = "NAME=VALUE")]
    pub options: Vec<String>,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `hyperprune prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The model (safetensors, with the architecture in its metadata or a spec JSON beside it).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture preset name or spec JSON file, when the model file carries none.
    #[arg(long)]
    pub arch: Option<String>,
    /// Pruner name (see `hyperprune plugins list`).
    #[arg(long)]
    pub pruner: String,
    /// Fraction of prunable weights to remove, in [0, 1).
    #[arg(long, allow_negative_numbers = true)]
    pub sparsity: f64,
    /// Request options.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Where to write the pruned model (safetensors). The masks go to
    /// `<out stem>.masks.safetensors` beside it (u8, 1 = kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Dataset for data-aware pruners (calibration from its train split) and for --eval.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder with the dataset's files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Calibration samples for pruners that ask for the default.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = crate::values::count_u64)]
    pub calib_samples: u64,
    /// Batch normalisation statistics of the pruned network (saved with it);
    /// `--bn-recalibrate` needs --dataset.
    #[command(flatten)]
    pub bn: BnArgs,
    /// Print dense and pruned test accuracy side by side (needs --dataset).
    #[arg(long, requires = "dataset")]
    pub eval: bool,
    /// Call the pruner this many times in this process and print the median, fastest and
    /// slowest call (a quiet-machine measure of a pruner's time per model; every call must
    /// give the same masks). The output is written once.
    #[arg(long, default_value_t = 1, value_name = "N", allow_negative_numbers = true, value_parser = crate::values::count)]
    pub repeat: usize,
    /// Where the plugin's `prune` call runs: `none` (in this process, the default) or
    /// `worker` (a supervised process: an abort, crash, hang past --timeout or memory
    /// exhaustion is a one-line error instead of the end of this process).
    #[arg(long, value_enum, default_value = "none")]
    pub isolate: IsolateArg,
    /// Longest the `prune` call may take under `--isolate worker`, seconds.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS", allow_negative_numbers = true, value_parser = crate::values::positive)]
    pub timeout: f64,
    /// Memory limit of the worker under `--isolate worker`, MiB (default: half of the
    /// machine's memory).
    #[arg(long, value_name = "MIB", allow_negative_numbers = true, value_parser = crate::values::count_u64)]
    pub worker_memory: Option<u64>,
    /// Where networks run (data services and --eval).
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `hyperprune eval`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture preset or spec JSON file, when the model file carries none.
    #[arg(long)]
    pub arch: Option<String>,
    /// Masks file written by `hyperprune prune` (u8, 1 = kept); applied before evaluating.
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Batch normalisation statistics after the masks are applied.
    #[command(flatten)]
    pub bn: BnArgs,
    /// Dataset.
    #[command(flatten)]
    pub data: DataArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Where networks run.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `hyperprune demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Zoo members to train on the embedded digits data (half train, an eighth val, the
    /// rest test).
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub members: usize,
    /// Epochs per member.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub epochs: usize,
    /// Folder for the zoo and the run.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Worker threads pruning in parallel.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = crate::values::count)]
    pub jobs: usize,
    /// Seed of the zoo and the bench.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where networks run.
    #[command(flatten)]
    pub exec: ExecArgs,
}
