//! CIFAR-style residual networks (He et al., "Deep residual learning for image recognition",
//! CVPR 2016, §4.2): a 3×3 stem, three stages of BasicBlocks at widths w, 2w, 4w (stride 2
//! entering stages 2 and 3), global average pooling and a linear classifier; depth = 6n + 2
//! with n blocks per stage. Every conv is followed by batch normalisation and has no bias;
//! where a block changes the shape, its shortcut is a projection (1×1 conv + batch
//! normalisation, He et al.'s option B).
//!
//! Tensor names follow torchvision's ResNet (`conv1.weight`, `bn1.running_mean`,
//! `layer2.0.conv1.weight`, `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.running_var`,
//! `fc.weight`), so a PyTorch ResNet of this shape saved with safetensors loads as it is
//! (its `num_batches_tracked` counters are ignored).
//!
//! Presets: `resnet20` (n = 3, width 16) and `resnet-s` (n = 1, width 8), both for 1×28×28
//! inputs and 10 classes, and the family `resnet:depth=D,width=W[,input=CxHxW][,classes=K]`.

use super::spec::{ArchSpec, LayerSpec, Link};

/// The family's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNet {
    /// 6n + 2.
    pub depth: usize,
    /// Channels of the first stage.
    pub width: usize,
    /// Input `[channels, height, width]`.
    pub input: [usize; 3],
    /// Output classes.
    pub classes: usize,
}

impl ResNet {
    /// Parses the settings after `resnet:` (`depth=20,width=16,input=3x32x32,classes=10`);
    /// missing keys take ResNet-20's depth and width and a 1×28×28, 10-class input.
    ///
    /// # Errors
    /// A message naming the key and what it expects.
    pub fn parse(settings: &str) -> Result<ResNet, String> {
        let mut net = ResNet { depth: 20, width: 16, input: [1, 28, 28], classes: 10 };
        for pair in settings.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("'{pair}' must look like key=value"))?;
            let number =
                |v: &str| v.trim().parse::<usize>().map_err(|_| format!("{key} expects a whole number, got '{v}'"));
            match key.trim() {
                "depth" => net.depth = number(value)?,
                "width" => net.width = number(value)?,
                "classes" => net.classes = number(value)?,
                "input" => {
                    let dims: Vec<usize> = value.split('x').map(number).collect::<Result<_, _>>()?;
                    net.input = dims.try_into().map_err(|_| format!("input expects CxHxW, got '{value}'"))?;
                }
                other => return Err(format!("unknown key '{other}'; expected depth, width, input or classes")),
            }
        }
        if net.depth < 8 || !(net.depth - 2).is_multiple_of(6) {
            return Err(format!("depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {}", net.depth));
        }
        if net.width == 0 {
            return Err("width must be at least 1".into());
        }
        Ok(net)
    }

    /// The spec, named `name`.
    pub fn spec(&self, name: &str) -> ArchSpec {
        let mut b = Builder::default();
        let w = self.width;
        b.conv("conv1", w, 3, 1, 1, None);
        b.push(bn("bn1"), None, None);
        b.push(LayerSpec::Relu, Some("relu"), None);
        let mut block_in = "relu".to_string();
        let mut channels = w;
        for stage in 1..=3 {
            let out = w << (stage - 1);
            for block in 0..(self.depth - 2) / 6 {
                let p = format!("layer{stage}.{block}");
                let stride = if stage > 1 && block == 0 { 2 } else { 1 };
                b.conv(&format!("{p}.conv1"), out, 3, stride, 1, Some(&block_in));
                b.push(bn(&format!("{p}.bn1")), None, None);
                b.push(LayerSpec::Relu, Some(&format!("{p}.relu1")), None);
                b.conv(&format!("{p}.conv2"), out, 3, 1, 1, None);
                b.push(bn(&format!("{p}.bn2")), None, None);
                let shortcut = if stride != 1 || channels != out {
                    b.conv(&format!("{p}.downsample.0"), out, 1, stride, 0, Some(&block_in));
                    b.push(bn(&format!("{p}.downsample.1")), None, None);
                    format!("{p}.downsample.1")
                } else {
                    block_in.clone()
                };
                b.push(LayerSpec::Add, Some(&format!("{p}.add")), Some(vec![format!("{p}.bn2"), shortcut]));
                block_in = format!("{p}.relu");
                b.push(LayerSpec::Relu, Some(&block_in), None);
                channels = out;
            }
        }
        b.push(LayerSpec::GlobalAvgPool, Some("avgpool"), None);
        b.push(LayerSpec::Flatten, Some("flatten"), None);
        b.push(LayerSpec::Linear { out_features: self.classes, bias: true, name: Some("fc".into()) }, None, None);
        ArchSpec { name: name.into(), input: self.input, classes: self.classes, layers: b.layers, links: b.links }
    }
}

fn bn(name: &str) -> LayerSpec {
    LayerSpec::BatchNorm2d { eps: 1e-5, momentum: 0.1, name: Some(name.into()) }
}

/// Layers and their links, appended in order.
#[derive(Default)]
struct Builder {
    layers: Vec<LayerSpec>,
    links: Vec<Link>,
}

impl Builder {
    fn push(&mut self, layer: LayerSpec, name: Option<&str>, inputs: Option<Vec<String>>) {
        self.layers.push(layer);
        self.links.push(Link { name: name.map(String::from), inputs });
    }

    fn conv(&mut self, name: &str, out: usize, kernel: usize, stride: usize, padding: usize, input: Option<&str>) {
        let conv =
            LayerSpec::Conv2d { out_channels: out, kernel, stride, padding, bias: false, name: Some(name.into()) };
        self.push(conv, None, input.map(|i| vec![i.to_string()]));
    }
}

pub(super) fn resnet20() -> ArchSpec {
    ResNet { depth: 20, width: 16, input: [1, 28, 28], classes: 10 }.spec("resnet20")
}

pub(super) fn resnet_s() -> ArchSpec {
    ResNet { depth: 8, width: 8, input: [1, 28, 28], classes: 10 }.spec("resnet-s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;

    fn trainable(spec: &ArchSpec) -> usize {
        spec.params().unwrap().iter().filter(|p| !p.role.is_buffer()).map(|p| p.numel()).sum()
    }

    #[test]
    fn resnet20_has_the_published_parameter_count_and_torchvision_names() {
        // He et al.'s ResNet-20 with projection shortcuts on 3x32x32, 10 classes: 272,474
        // trainable parameters (stem 432 + 32; stages 14,016, 51,648 and 205,696; fc 650).
        let spec = preset("resnet:depth=20,width=16,input=3x32x32").unwrap();
        assert_eq!(trainable(&spec), 272_474);
        let names: Vec<String> = spec.params().unwrap().into_iter().map(|p| p.name).collect();
        for name in [
            "conv1.weight",
            "bn1.running_mean",
            "layer1.0.conv1.weight",
            "layer2.0.conv1.weight",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var",
            "layer3.2.bn2.bias",
            "fc.weight",
            "fc.bias",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        assert!(!names.iter().any(|n| n.starts_with("layer1.0.downsample")), "no projection where the shape holds");
        let graph = spec.graph().unwrap();
        assert!(!graph.is_chain());
        // 19 convs and one linear are prunable; batch normalisation never is.
        let prunable = spec.params().unwrap().into_iter().filter(|p| p.prunable).count();
        assert_eq!(prunable, 19 + 2 + 1);
    }

    #[test]
    fn the_family_spans_depths_widths_and_inputs() {
        for (name, blocks, width) in [("resnet-s", 1, 8), ("resnet20", 3, 16), ("resnet:depth=14,width=8", 2, 8)] {
            let spec = preset(name).unwrap();
            let adds = spec.layers.iter().filter(|l| matches!(l, LayerSpec::Add)).count();
            assert_eq!(adds, 3 * blocks, "{name}");
            assert_eq!(spec.params().unwrap()[0].shape, vec![width, 1, 3, 3], "{name}");
            assert_eq!(spec.shapes().unwrap().last(), Some(&crate::arch::FeatureShape::Flat(10)));
        }
        // Digits' 8x8 inputs: 8 -> 4 -> 2 through the stride-2 stages.
        let digits = preset("resnet:depth=8,width=8,input=1x8x8").unwrap();
        let pooled = digits.graph().unwrap().nodes.iter().find(|n| n.name == "avgpool").unwrap().input;
        assert_eq!(pooled, crate::arch::FeatureShape::Map { c: 32, h: 2, w: 2 });
        for bad in ["resnet:depth=9", "resnet:width=0", "resnet:input=1x8", "resnet:colour=red", "resnet:depth"] {
            let e = preset(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_resnet_round_trips_through_json_and_a_sequential_spec_keeps_its_old_json() {
        let spec = preset("resnet-s").unwrap();
        let back = ArchSpec::from_json(&spec.to_json()).unwrap();
        assert_eq!(back, spec);
        let json = preset("cnn-s").unwrap().to_json();
        assert!(!json.contains("inputs") && !json.contains("links"), "{json}");
    }
}
