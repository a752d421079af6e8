//! Built-in architectures, registered with `inventory`.

use super::{ArchSpec, LayerSpec};

/// A named, built-in architecture.
pub struct Preset {
    /// Name used on the command line (`--arch cnn-s`).
    pub name: &'static str,
    /// One line on what it is and where it comes from.
    pub description: &'static str,
    /// Builds the spec.
    pub build: fn() -> ArchSpec,
}

inventory::collect!(Preset);

/// Every registered preset, sorted by name.
pub fn presets() -> Vec<&'static Preset> {
    let mut all: Vec<&'static Preset> = inventory::iter::<Preset>.into_iter().collect();
    all.sort_by_key(|p| p.name);
    all
}

/// The preset called `name`, or a member of the ResNet family
/// (`resnet:depth=D,width=W[,input=CxHxW][,classes=K]`, see [`super::resnet`]).
///
/// # Errors
/// [`super::ArchError::UnknownPreset`] listing the known names.
pub fn preset(name: &str) -> Result<ArchSpec, super::ArchError> {
    if let Some(settings) = name.strip_prefix("resnet:") {
        let net = super::resnet::ResNet::parse(settings).map_err(|message| super::ArchError::Invalid {
            arch: name.to_string(),
            layer: None,
            message: format!("{message} (resnet:depth=D,width=W[,input=CxHxW][,classes=K])"),
        })?;
        return Ok(net.spec(name));
    }
    presets().into_iter().find(|p| p.name == name).map(|p| (p.build)()).ok_or_else(|| super::ArchError::UnknownPreset {
        name: name.to_string(),
        known: presets().iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
    })
}

fn conv(out_channels: usize, kernel: usize, padding: usize) -> LayerSpec {
    LayerSpec::Conv2d { out_channels, kernel, stride: 1, padding, bias: true, name: None }
}

fn linear(out_features: usize, bias: bool) -> LayerSpec {
    LayerSpec::Linear { out_features, bias, name: None }
}

fn max_pool(kernel: usize) -> LayerSpec {
    LayerSpec::MaxPool { kernel, stride: None }
}

fn cnn_s() -> ArchSpec {
    ArchSpec {
        name: "cnn-s".into(),
        input: [1, 28, 28],
        classes: 10,
        links: Vec::new(),
        layers: vec![
            conv(8, 5, 0),
            max_pool(2),
            LayerSpec::Tanh,
            conv(6, 5, 0),
            max_pool(2),
            LayerSpec::Tanh,
            conv(4, 2, 0),
            LayerSpec::Tanh,
            LayerSpec::Flatten,
            linear(20, true),
            LayerSpec::Tanh,
            linear(10, true),
        ],
    }
}

fn mlpnet() -> ArchSpec {
    ArchSpec {
        name: "mlpnet".into(),
        input: [1, 28, 28],
        classes: 10,
        links: Vec::new(),
        layers: vec![
            LayerSpec::Flatten,
            linear(40, false),
            LayerSpec::Relu,
            linear(20, false),
            LayerSpec::Relu,
            linear(10, false),
        ],
    }
}

fn lenet5() -> ArchSpec {
    ArchSpec {
        name: "lenet5".into(),
        input: [1, 28, 28],
        classes: 10,
        links: Vec::new(),
        layers: vec![
            conv(6, 5, 2),
            LayerSpec::Relu,
            max_pool(2),
            conv(16, 5, 0),
            LayerSpec::Relu,
            max_pool(2),
            LayerSpec::Flatten,
            linear(120, true),
            LayerSpec::Relu,
            linear(84, true),
            LayerSpec::Relu,
            linear(10, true),
        ],
    }
}

fn cnn_digits() -> ArchSpec {
    ArchSpec {
        name: "cnn-digits".into(),
        input: [1, 8, 8],
        classes: 10,
        links: Vec::new(),
        layers: vec![
            conv(8, 3, 1),
            LayerSpec::Tanh,
            max_pool(2),
            conv(16, 3, 1),
            LayerSpec::Tanh,
            max_pool(2),
            LayerSpec::Flatten,
            linear(32, true),
            LayerSpec::Tanh,
            linear(10, true),
        ],
    }
}

inventory::submit! {
    Preset {
        name: "cnn-s",
        description: "Model Zoos small CNN (Schürholt et al. 2022): 3 convs + 2 linear, 2,464 parameters, 28x28x1",
        build: cnn_s,
    }
}

inventory::submit! {
    Preset {
        name: "mlpnet",
        description: "784-40-20-10 ReLU MLP without bias, the WoodFisher/CHITA benchmark network, 28x28x1",
        build: mlpnet,
    }
}

inventory::submit! {
    Preset {
        name: "lenet5",
        description: "LeNet-5 (ReLU, max pooling), 61,706 parameters, 28x28x1",
        build: lenet5,
    }
}

inventory::submit! {
    Preset {
        name: "cnn-digits",
        description: "small CNN for the embedded 8x8 digits: 2 convs + 2 linear, 3,658 parameters",
        build: cnn_digits,
    }
}

inventory::submit! {
    Preset {
        name: "resnet20",
        description: "ResNet-20 (He et al. 2016, CIFAR form): 3 stages x 3 BasicBlocks, widths 16/32/64, batch \
                      normalisation, projection shortcuts, torchvision tensor names; 28x28x1 (resnet:... for others)",
        build: super::resnet::resnet20,
    }
}

inventory::submit! {
    Preset {
        name: "resnet-s",
        description: "a zoo-sized ResNet: one BasicBlock per stage, widths 8/16/32 (resnet:depth=8,width=8), 28x28x1",
        build: super::resnet::resnet_s,
    }
}
