//! A spec's graph on arbitrary bytes: `ArchSpec::read`, and for a spec that reads, its
//! graph and (for small networks) the SDK view of a model,
//! whose nodes must agree with the graph. Seed it with a ResNet spec
//! (`hyperprune zoo show` of a ResNet zoo, or `ArchSpec::to_json` of `resnet-s`).
#![no_main]

mod common;

use hyperprune_core::{ArchSpec, Model, model_ref};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write("graph.json", data);
    let read = ArchSpec::read(&path);
    if let Ok(spec) = &read {
        let graph = spec.graph().expect("a spec that reads lowers to its graph");
        assert_eq!(graph.nodes.len(), spec.layers.len());
        if spec.param_count().is_ok_and(|n| n <= 1 << 20) {
            let model = Model::zeros(spec.clone()).expect("a valid spec has a model");
            model_ref(&model, |view| {
                assert_eq!(view.nodes().len(), graph.nodes.len());
                for (node, sdk) in graph.nodes.iter().zip(view.nodes()) {
                    assert_eq!(node.name, sdk.name());
                    assert!(sdk.inputs().all(|i| i.is_none_or(|j| j < graph.nodes.len())));
                }
                assert_eq!(Model::from_ref(&view).expect("a view round-trips"), model);
            });
        }
    }
    common::assert_names_file(read, &path);
});
