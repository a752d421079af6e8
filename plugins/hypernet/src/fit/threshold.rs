//! After the fit, the threshold head refitted to the scoring network that was kept, so
//! that `mask=threshold` tracks the requested sparsity.

use burn::tensor::{Tensor, TensorData, activation};

use super::settings::FitSettings;
use super::step::{Adam, Prepared, Train};
use crate::base::{self, Base};
use crate::network::{self, Allocation, NetConfig, Params};
use crate::selection::{select, standardise};

/// Refits the threshold head to the kept scoring network: on a grid of 64 sparsities over
/// the fitted range, the target is the mean over the train members of the standardised
/// score at the top-k boundary (the threshold that keeps `1 − s` of each member's weights).
/// During the fit the head chased a network that kept changing; this makes `mask=threshold`
/// track the request for the parameters actually kept.
pub(super) fn calibrate_threshold(
    net: &NetConfig,
    params: &mut Params,
    train: &[Prepared<'_>],
    base: &Base,
    settings: &FitSettings,
) {
    const GRID: usize = 64;
    let grid: Vec<f64> =
        (0..GRID).map(|i| settings.s_min + (settings.s_max - settings.s_min) * i as f64 / (GRID - 1) as f64).collect();
    let mut targets = vec![0f64; GRID];
    for member in train {
        for (t, &s) in targets.iter_mut().zip(&grid) {
            let (mut scores, _) = base::scores(net, params, base, &member.encoded, &member.model.weights(), s);
            standardise(&mut scores);
            *t += select(Allocation::Learned, &member.encoded, &scores, s, settings.floor).thresholds[0] as f64;
        }
    }
    targets.iter_mut().for_each(|t| *t /= train.len().max(1) as f64);
    let names = ["thr.w1", "thr.b1", "thr.w2", "thr.b2"];
    let index: Vec<usize> =
        names.iter().map(|n| params.list.iter().position(|p| p.name == *n).expect("threshold head")).collect();
    let mut head = Params { list: index.iter().map(|&i| params.list[i].clone()).collect() };
    let mut adam = Adam::new(&head);
    let device = Default::default();
    let e: Vec<f32> = grid.iter().flat_map(|&s| network::embed(s)).collect();
    let e = Tensor::<Train, 2>::from_data(TensorData::new(e, [GRID, network::EMBED]), &device);
    let y =
        Tensor::<Train, 2>::from_data(TensorData::new(targets.iter().map(|&t| t as f32).collect(), [GRID, 1]), &device);
    for _ in 0..1500 {
        let t: Vec<Tensor<Train, 2>> = head.tensors::<Train>(&device).into_iter().map(|t| t.require_grad()).collect();
        let h = activation::tanh(e.clone().matmul(t[0].clone()) + t[1].clone());
        let loss = (h.matmul(t[2].clone()) + t[3].clone() - y.clone()).powf_scalar(2.0).mean();
        let g = loss.backward();
        let grads: Vec<Vec<f32>> = t
            .iter()
            .zip(&head.list)
            .map(|(t, p)| t.grad(&g).map_or_else(|| vec![0.0; p.values.len()], network::values))
            .collect();
        adam.step(&mut head, &grads, 1e-2);
    }
    for (&i, p) in index.iter().zip(head.list) {
        params.list[i] = p;
    }
}
