//! How the hypernetwork sees a prunable layer: a weight tensor viewed as
//! `[out, in, k]`, where `k` runs over kernel positions (conv) or, for a linear layer that
//! follows a flatten of a convolution's output, over the spatial positions of one channel.
//! Viewed this way, the input units of every layer are the output units of the layer
//! before it, so permuting a hidden unit permutes one `out` index and the next layer's
//! matching `in` index, and nothing else.

use hyperprune_sdk::{LayerKind, LayerRef, ModelRef};

/// One prunable layer, viewed as `[out, inp, k]` (row-major: the weight tensor's own order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerView {
    /// Output units (rows).
    pub out: usize,
    /// Input units: input channels, input features, or the channels before a flatten.
    pub inp: usize,
    /// Positions per (out, in) pair: `kh·kw` for a conv, `h·w` after a flatten, else 1.
    pub k: usize,
    /// Kernel height; after a flatten, the map's height when it is square; else 1.
    pub kh: usize,
    /// Kernel width; after a flatten, the map's width when it is square; else 1.
    pub kw: usize,
    /// Whether the layer is a convolution.
    pub conv: bool,
}

impl LayerView {
    /// Number of weights.
    pub fn len(&self) -> usize {
        self.out * self.inp * self.k
    }

    /// Whether the layer has no weights.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f(out, in, v)` for every weight `v` of `w` (this view's tensor), in the tensor's order:
    /// its output unit, its input unit (`k` consecutive weights each), and its value.
    pub fn each(&self, w: &[f32], mut f: impl FnMut(usize, usize, f32)) {
        let k = self.k.max(1);
        for (o, row) in w.chunks((self.inp * k).max(1)).enumerate() {
            for (i, cell) in row.chunks(k).enumerate() {
                cell.iter().for_each(|&v| f(o, i, v));
            }
        }
    }

    /// The weight tensor's fan-in: `in · k` in the original layout.
    pub fn fan_in(&self) -> usize {
        self.inp * self.k
    }
}

/// The views of every prunable layer of `model`, in order.
///
/// # Errors
/// A layer whose shape does not fit its kind (a conv weight that is not 4-d, a linear one
/// that is not 2-d, or a shape whose product is not the number of weights).
pub fn views(model: &ModelRef<'_>) -> Result<Vec<LayerView>, String> {
    let mut out: Vec<LayerView> = Vec::with_capacity(model.layers().len());
    for layer in model.layers() {
        let view = view_of(layer, out.last())?;
        out.push(view);
    }
    Ok(out)
}

fn view_of(layer: &LayerRef<'_>, previous: Option<&LayerView>) -> Result<LayerView, String> {
    let shape = layer.shape();
    let n = layer.weights().len();
    let bad =
        || format!("layer '{}': shape {shape:?} does not fit a {:?} weight of {n} values", layer.name(), layer.kind);
    let view = match (layer.kind, shape.as_slice()) {
        (LayerKind::Conv2d, &[o, i, kh, kw]) => LayerView { out: o, inp: i, k: kh * kw, kh, kw, conv: true },
        (LayerKind::Linear, &[o, i]) => {
            // A linear layer after a flatten of `c` channels sees `[c, h·w]` per row; a square
            // map is taken to be `h = w` (the spatial position is then a feature).
            let channels = previous.filter(|p| p.conv).map(|p| p.out).filter(|&c| c > 0 && i % c == 0 && i > c);
            match channels {
                Some(c) => {
                    let side = square_side(i / c).unwrap_or(1);
                    let (kh, kw) = if side * side == i / c { (side, side) } else { (1, 1) };
                    LayerView { out: o, inp: c, k: i / c, kh, kw, conv: false }
                }
                None => LayerView { out: o, inp: i, k: 1, kh: 1, kw: 1, conv: false },
            }
        }
        _ => return Err(bad()),
    };
    if view.len() != n {
        return Err(bad());
    }
    Ok(view)
}

/// `n`'s integer square root when `n` is a perfect square.
pub fn square_side(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

/// Whether layer `next`'s input units are layer `prev`'s output units (they are in every
/// sequential network whose views chain; a mismatch means an unsupported layer between).
pub fn chained(prev: &LayerView, next: &LayerView) -> bool {
    prev.out == next.inp
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::abi_stable::std_types::{RSlice, RStr};

    #[test]
    fn a_linear_layer_after_a_conv_is_viewed_per_channel() {
        let conv_shape = [4u64, 1, 2, 2];
        let lin_shape = [3u64, 4 * 9];
        let conv_w = vec![0.0f32; 16];
        let lin_w = vec![0.0f32; 3 * 36];
        let layers = [
            LayerRef {
                name: RStr::from_str("0.weight"),
                kind: LayerKind::Conv2d,
                shape: RSlice::from_slice(&conv_shape),
                weights: RSlice::from_slice(&conv_w),
            },
            LayerRef {
                name: RStr::from_str("3.weight"),
                kind: LayerKind::Linear,
                shape: RSlice::from_slice(&lin_shape),
                weights: RSlice::from_slice(&lin_w),
            },
        ];
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&layers),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        };
        let v = views(&model).unwrap();
        assert_eq!((v[0].out, v[0].inp, v[0].k, v[0].conv), (4, 1, 4, true));
        assert_eq!((v[1].out, v[1].inp, v[1].k, v[1].conv), (3, 4, 9, false));
        assert_eq!((v[1].kh, v[1].kw), (3, 3), "a square 3×3 map after the flatten");
        assert!(chained(&v[0], &v[1]));
        let (w, mut units) = (vec![0.5f32; v[1].len()], Vec::new());
        v[1].each(&w, |o, i, _| units.push((o, i)));
        assert_eq!(units.len(), v[1].len());
        assert_eq!((units[0], units[8], units[9], units[35], units[36]), ((0, 0), (0, 0), (0, 1), (0, 3), (1, 0)));
    }
}
