"""PyTorch modules in and out: derive hyperprune's architecture spec from an ``nn.Module`` and
prune the module in place.

Needs PyTorch (``import hyperprune`` alone never imports it)::

    import torch
    import hyperprune as hp
    from hyperprune.torch import prune_module, spec_from_module

    spec = spec_from_module(net, torch.zeros(1, 1, 28, 28))   # what a spec JSON file holds
    result = prune_module(net, "obs", 0.9, dataset="fashion-mnist",
                          example_input=torch.zeros(1, 1, 28, 28))
    # net.conv1.weight_mask, ... now exist (torch.nn.utils.prune.custom_from_mask), and OBS's
    # updated weights are in net.conv1.weight_orig.

The module is traced with ``torch.fx.symbolic_trace`` and run once on the example input (in
eval mode, without gradients; its training flags are restored afterwards). Conv, linear and
batch-norm nodes are named by the module's qualified names, so the spec's tensor names are the
module's ``state_dict`` keys (``layer1.0.conv1.weight``, ``bn1.running_mean``, ``fc.weight``);
the other nodes take torch.fx's node names.
"""

from __future__ import annotations

import operator
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune

from hyperprune import InputError, Model, PruneResult, prune

__all__ = ["SUPPORTED", "spec_from_module", "prune_module"]

#: What ``spec_from_module`` translates, as its error messages list it.
SUPPORTED = (
    "nn.Conv2d (groups=1, dilation=1, square kernel and stride, zero padding), nn.Linear, "
    "nn.BatchNorm2d (affine, with running statistics), nn.ReLU / nn.Tanh / nn.Sigmoid / nn.GELU "
    "and F.relu / torch.relu / tanh / sigmoid / F.gelu, nn.MaxPool2d / nn.AvgPool2d and "
    "F.max_pool2d / F.avg_pool2d (square, no padding, floor mode), nn.AdaptiveAvgPool2d(1) / "
    "x.mean((2, 3)), nn.Flatten / torch.flatten / x.flatten(1) / x.view(x.size(0), -1) / "
    "reshape to (batch, -1), + / torch.add / x.add of two tensors, nn.Dropout / nn.Identity / "
    "F.dropout / x.contiguous() (skipped: no-ops in eval)"
)

_REQUIRED = object()

_RELU = {F.relu, torch.relu, torch.relu_, F.relu_}
_TANH = {torch.tanh, F.tanh}
_SIGMOID = {torch.sigmoid, F.sigmoid}
_ADD = {operator.add, operator.iadd, torch.add}
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
_FLATTEN_LIKE = {torch.flatten, torch.reshape}
_SKIPPED_MODULES = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_ACTIVATION_METHODS = {
    "relu": "relu",
    "relu_": "relu",
    "tanh": "tanh",
    "tanh_": "tanh",
    "sigmoid": "sigmoid",
    "sigmoid_": "sigmoid",
}


_SHAPE = "hyperprune_shape"  # node.meta key: the output's shape; None when it is several tensors


class _Unsupported(Exception):
    """What one fx node does that the spec cannot say (raised as ``InputError``)."""


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs a traced module and records each node's output shape in ``node.meta``."""

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        super().__init__(graph_module)
        self.extra_traceback = False  # the module's own error, as it is

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta[_SHAPE] = tuple(int(d) for d in result.shape)
        elif isinstance(result, (tuple, list, dict)) and _holds_tensor(result):
            n.meta[_SHAPE] = None
        return result


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return any(_holds_tensor(v) for v in items)


def spec_from_module(module: nn.Module, example_input: torch.Tensor, *, name: Optional[str] = None) -> Dict[str, Any]:
    """hyperprune's architecture spec for ``module``: what a spec JSON file holds.

    The module is traced with ``torch.fx.symbolic_trace`` and run once on ``example_input``
    (eval mode, no gradients; training flags restored) to learn every tensor's shape. Conv,
    linear and batch-norm nodes are named by their qualified module names, so the tensor
    names the spec implies are the module's ``state_dict`` keys; dropout and identity are left
    out (no-ops in eval). The spec is checked by hyperprune when a model is built from it
    (``hyperprune.Model.from_state_dict(module.state_dict(), spec)``).

    Args:
        module: the network: one image batch ``[N, C, H, W]`` in, one ``[N, classes]``
            tensor of logits out.
        example_input: an input batch; its shape without the batch dimension is the spec's
            ``input``.
        name: the spec's ``name``; defaults to the module's class name.

    Returns:
        ``{"name", "input": [C, H, W], "classes", "layers": [...]}``, each layer a dict with
        ``type``, ``name``, its fields and, where it does not read the layer before it,
        ``inputs``.

    Raises:
        InputError: in one line: the example input is not a 4-D tensor, the module cannot be
            traced or run on it, its output is not ``[N, classes]``, or it uses a layer, a
            function or a setting the spec has no kind for (named with its qualified name,
            with the supported list).
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"spec_from_module: expected a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        got = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise InputError(f"spec_from_module: example_input must be an image batch tensor [N, C, H, W], got {got}")
    try:
        graph_module = torch.fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - any tracing failure is the caller's module
        raise InputError(
            f"spec_from_module: torch.fx.symbolic_trace cannot trace {type(module).__name__}: {_one_line(e)}"
        ) from None
    try:
        _refuse_lost_in_place(graph_module)
    except _Unsupported as e:
        raise InputError(f"spec_from_module: {e}; supported: {SUPPORTED}") from None
    graph_module.graph.eliminate_dead_code()
    _propagate_shapes(module, graph_module, example_input)
    try:
        layers, output = _layers(graph_module)
    except _Unsupported as e:
        raise InputError(f"spec_from_module: {e}; supported: {SUPPORTED}") from None
    if len(output) != 2:
        raise InputError(
            f"spec_from_module: the module's output has shape {list(output)}, expected [batch, classes] logits"
        )
    return {
        "name": name if name is not None else type(module).__name__,
        "input": [int(d) for d in example_input.shape[1:]],
        "classes": int(output[1]),
        "layers": layers,
    }


def prune_module(
    module: nn.Module,
    pruner: str = "magnitude",
    sparsity: float = 0.9,
    arch: Union[str, Mapping[str, Any], os.PathLike, None] = None,
    dataset: Optional[str] = None,
    example_input: Optional[torch.Tensor] = None,
    **prune_kwargs: Any,
) -> PruneResult:
    """Prunes ``module`` with a hyperprune pruner and applies the result to it, in place.

    The module's parameters are copied into a ``hyperprune.Model`` (``Model.from_state_dict``;
    buffers such as ``num_batches_tracked`` that the spec does not name are ignored) and
    pruned by ``hyperprune.prune``. Then, for every pruned weight: when the pruner moved the
    weights it keeps (``result.weights``: OBS, WoodFisher, CHITA), the new values are copied
    into the layer's weight first; then ``torch.nn.utils.prune.custom_from_mask`` adds the keep
    mask (``layer.weight_mask``, the weights in ``layer.weight_orig``). Other tensors the
    pruned model holds changed (batch-norm statistics, when ``hyperprune.prune`` re-estimates
    them) are copied into the module too. A module pruned with
    ``torch.nn.utils.prune`` before is read with its current (masked) weights, and its masks
    combine with the new ones.

    Args:
        module: the network (see ``spec_from_module``).
        pruner: a plugin name (``hyperprune.plugins()``).
        sparsity: fraction of prunable weights to remove, in [0, 1).
        arch: a preset name, spec dict or spec JSON file; default
            ``spec_from_module(module, example_input)``.
        dataset: calibration data for data-aware pruners (``"digits"``, ``"fashion-mnist"``).
        example_input: an input batch ``[N, C, H, W]``; needed when ``arch`` is None.
        **prune_kwargs: the other arguments of ``hyperprune.prune`` (``scope``, ``pattern``,
            ``data_dir``, ``calib_samples``, ``options``, ``seed``).

    Returns:
        The ``hyperprune.PruneResult`` (masks keyed by the module's parameter names).

    Raises:
        InputError: neither ``arch`` nor ``example_input`` given, a module ``spec_from_module``
            cannot translate, a state dict that does not fit ``arch``, a pruned tensor that is
            no weight of the module, or what ``hyperprune.prune`` refuses.
        PluginError: the plugin failed.
    """
    if arch is None:
        if example_input is None:
            raise InputError(
                "prune_module: pass example_input= (an input batch [N, C, H, W]) to derive the architecture "
                "from the module, or arch= (a preset name, spec dict or spec JSON file)"
            )
        arch = spec_from_module(module, example_input)
    state = _effective_state_dict(module)
    model = Model.from_state_dict(state, arch)
    result = prune(model, pruner, sparsity, dataset=dataset, **prune_kwargs)
    targets = {name: _weight_owner(module, name) for name in result.masks}
    with torch.no_grad():
        for name, new in (result.weights or {}).items():
            owner, attribute = targets[name] if name in targets else _weight_owner(module, name)
            stored = getattr(owner, attribute + "_orig", None)
            stored = stored if isinstance(stored, torch.Tensor) else getattr(owner, attribute)
            stored.copy_(torch.from_numpy(np.ascontiguousarray(new)).reshape(stored.shape).to(stored))
        # Other tensors the pruned model changed (batch-norm statistics re-estimated after
        # masking, where hyperprune.prune was asked to): copied back as well.
        for name, value in result.model.state_dict().items():
            if name in result.masks or name not in state:
                continue
            before = state[name].detach().cpu().to(torch.float32).numpy()
            if before.shape == value.shape and not np.array_equal(before, value):
                owner, attribute = _weight_owner(module, name)
                stored = getattr(owner, attribute)
                stored.copy_(torch.from_numpy(value).reshape(stored.shape).to(stored))
    for name, keep in result.masks.items():
        owner, attribute = targets[name]
        weight = getattr(owner, attribute)
        mask = torch.from_numpy(np.ascontiguousarray(keep)).reshape(weight.shape)
        torch_prune.custom_from_mask(owner, attribute, mask.to(device=weight.device, dtype=weight.dtype))
    return result


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _effective_state_dict(module: nn.Module) -> Dict[str, torch.Tensor]:
    """``module.state_dict()``, with the ``X_orig``/``X_mask`` pairs of ``torch.nn.utils.prune``
    replaced by the masked tensor ``X`` the module computes with."""
    state = module.state_dict()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            path, _, attribute = key[: -len("_orig")].rpartition(".")
            owner = module.get_submodule(path) if path else module
            out[key[: -len("_orig")]] = getattr(owner, attribute).detach()
            continue
        out[key] = value
    return out


def _weight_owner(module: nn.Module, name: str) -> Tuple[nn.Module, str]:
    """The submodule and attribute a tensor name (``layer1.0.conv1.weight``) points to."""
    path, _, attribute = name.rpartition(".")
    try:
        owner = module.get_submodule(path) if path else module
    except AttributeError:
        owner = None
    if owner is None or not isinstance(getattr(owner, attribute, None), torch.Tensor):
        raise InputError(
            f"prune_module: the pruned tensor '{name}' is not a parameter of the module; "
            "the arch's tensor names must be the module's state_dict keys"
        )
    return owner, attribute


def _propagate_shapes(module: nn.Module, graph_module: torch.fx.GraphModule, example_input: torch.Tensor) -> None:
    """Records every node's output shape in ``node.meta``, running in eval mode."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            _ShapeRecorder(graph_module).run(example_input)
    except Exception as e:  # noqa: BLE001 - the caller's module failed on the caller's input
        raise InputError(
            f"spec_from_module: {type(module).__name__} fails on an input of shape {list(example_input.shape)}: "
            f"{_one_line(e)}"
        ) from None
    finally:
        for m, training in modes:
            m.training = training


def _refuse_lost_in_place(graph_module: torch.fx.GraphModule) -> None:
    """Refuses an in-place operation whose result nothing reads (``out.add_(identity)``,
    ``self.relu(out)`` with ``inplace=True``, then ``return out``): the traced graph does not
    see what it changed."""
    modules = dict(graph_module.named_modules())
    for node in graph_module.graph.nodes:
        if node.users or node.op not in ("call_module", "call_method", "call_function"):
            continue
        if node.op == "call_module":
            in_place = bool(getattr(modules[str(node.target)], "inplace", False))
        elif node.op == "call_method":
            in_place = str(node.target).endswith("_")
        else:
            name = getattr(node.target, "__name__", "")
            in_place = bool(node.kwargs.get("inplace")) or (name.endswith("_") and not name.startswith("_"))
        if in_place:
            raise _Unsupported(
                f"the in-place {_what(node, modules)} at {_where(node)} changes a tensor without its result "
                "being used; use its result (out = out + identity, out = relu(out))"
            )


def _shape(node: torch.fx.Node) -> Optional[Tuple[int, ...]]:
    """The shape of the tensor ``node`` produces; None when it produces no single tensor."""
    return node.meta.get(_SHAPE)


def _layers(graph_module: torch.fx.GraphModule) -> Tuple[List[Dict[str, Any]], Tuple[int, ...]]:
    """The spec's layers, and the shape of the network's output."""
    modules = dict(graph_module.named_modules())
    layers: List[Dict[str, Any]] = []
    source: Dict[torch.fx.Node, str] = {}  # fx node -> spec node name ("input": the network's input)
    # The layers with tensors keep their qualified names; other nodes never take one.
    taken = {"input"} | {name for name, m in modules.items() if type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d)}
    called: Dict[str, str] = {}
    output: Optional[torch.fx.Node] = None
    placeholders = 0

    def tensor_input(node: torch.fx.Node, value: Any) -> str:
        if isinstance(value, torch.fx.Node) and value in source:
            return source[value]
        if isinstance(value, torch.fx.Node) and value.op == "placeholder":
            raise _Unsupported(f"{_where(node)} reads the module's second input '{value.name}' (one image input only)")
        raise _Unsupported(
            f"{_what(node, modules)} at {_where(node)} reads {_describe(value)}, not a tensor of the network"
        )

    def emit(node: torch.fx.Node, layer: Dict[str, Any], inputs: List[str], named: Optional[str] = None) -> str:
        node_name = named if named is not None else _fresh(node.name, taken)
        taken.add(node_name)
        previous = layers[-1]["name"] if layers else "input"
        entry = {"type": layer.pop("type"), "name": node_name, **layer}
        if inputs != [previous]:
            entry["inputs"] = inputs
        layers.append(entry)
        return node_name

    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            placeholders += 1
            if placeholders == 1:
                source[node] = "input"
            continue
        if node.op == "output":
            output = node
            continue
        if node.op == "get_attr":
            raise _Unsupported(
                f"the module reads the tensor attribute '{node.target}' directly (node '{node.name}'); "
                "only the weights of the supported layers can be used"
            )
        shape = _shape(node)
        if shape is None:
            if _SHAPE in node.meta:  # several tensors out (split, max with dim, ...)
                raise _Unsupported(f"{_what(node, modules)} at {_where(node)}")
            continue  # sizes and other plain values: arguments of view/reshape
        kind = _translate(node, modules)
        if kind is None:  # a no-op in eval
            source[node] = tensor_input(node, _first(node))
            continue
        if node.op == "call_module" and isinstance(kind, dict) and kind["type"] in ("conv2d", "linear", "batchnorm2d"):
            qualified = str(node.target)
            if qualified in called:
                raise _Unsupported(
                    f"{_what(node, modules)} at '{qualified}' is called more than once (shared weights); "
                    "each conv, linear and batch norm must be used once"
                )
            called[qualified] = node.name
            source[node] = emit(node, dict(kind), [tensor_input(node, _first(node))], named=qualified)
            continue
        steps = kind if isinstance(kind, list) else [kind]
        if steps[0]["type"] == "add":
            operands = steps[0].pop("operands")
            last = emit(node, dict(steps[0]), [tensor_input(node, v) for v in operands])
        else:
            last = tensor_input(node, _first(node))
            for i, step in enumerate(steps):
                suffix = "" if i == 0 else f"_{step['type']}"
                last = emit(node, dict(step), [last], named=_fresh(node.name + suffix, taken))
        source[node] = last

    assert output is not None, "an fx graph has an output node"
    result = output.args[0]
    if not isinstance(result, torch.fx.Node) or _shape(result) is None:
        raise _Unsupported(f"the module returns {_describe(result)}; it must return one tensor of logits")
    if result not in source:
        raise _Unsupported(f"the module's output '{result.name}' is not computed from its input")
    if not layers or source[result] != layers[-1]["name"]:
        raise _Unsupported(f"the module's output '{result.name}' must be the last value it computes")
    return layers, _shape(result)  # type: ignore[return-value]


def _first(node: torch.fx.Node) -> Any:
    """A node's first argument: the tensor it reads (positional, or ``input=``/``self=``)."""
    if node.args:
        return node.args[0]
    return node.kwargs.get("input", node.kwargs.get("self"))


def _fresh(name: str, taken: set) -> str:
    """``name``, or ``name_2``, ``name_3``, ... when it is taken."""
    if name not in taken:
        return name
    i = 2
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"


def _where(node: torch.fx.Node) -> str:
    """Where a node is, quoted: the qualified name of the module it calls, else of the module
    its call sits in and the node's name."""
    if node.op == "call_module":
        return f"'{node.target}'"
    stack = node.meta.get("nn_module_stack")
    path = next(reversed(stack.values()))[0] if stack else ""
    return f"'{path}' (node '{node.name}')" if path else f"node '{node.name}'"


def _function_name(target: Any) -> str:
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or repr(target)
    module = {
        "torch._C._nn": "torch.nn.functional",
        "torch._C._VariableFunctions": "torch",
        "_operator": "operator",
    }.get(module, module)
    return f"{module}.{name}" if module else name


def _what(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> str:
    """What a node runs, for messages: ``nn.LSTM``, ``torch.cat``, ``Tensor.chunk()``."""
    if node.op == "call_module":
        cls = type(modules[str(node.target)])
        prefix = "nn." if cls.__module__.startswith("torch.nn") else f"{cls.__module__}."
        return prefix + cls.__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}()"
    if node.op == "call_function":
        return _function_name(node.target)
    return node.op


def _describe(value: Any) -> str:
    if isinstance(value, torch.fx.Node):
        return f"'{value.name}'"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} values"
    return f"the constant {value!r}"


def _bind(
    node: torch.fx.Node,
    params: Sequence[Tuple[str, Any]],
    modules: Mapping[str, nn.Module],
    tensors: Sequence[str] = (),
) -> Dict[str, Any]:
    """The node's arguments by parameter name (``params``: names and defaults, the first the
    tensor input); every one but the first and those named in ``tensors`` must be a constant."""
    args = list(node.args)
    if len(args) > len(params):
        raise _Unsupported(f"{_what(node, modules)} at {_where(node)} takes {len(args)} arguments")
    bound = {name: default for name, default in params}
    for (name, _), value in zip(params, args):
        bound[name] = value
    for key, value in node.kwargs.items():
        if key not in bound:
            raise _Unsupported(f"{_what(node, modules)} at {_where(node)} with argument '{key}'")
        bound[key] = value
    for name, value in list(bound.items())[1:]:
        if name in tensors:
            continue
        if value is _REQUIRED:
            raise _Unsupported(f"{_what(node, modules)} at {_where(node)} lacks argument '{name}'")
        if _has_node(value):
            raise _Unsupported(
                f"{_what(node, modules)} at {_where(node)} takes its '{name}' from a value computed at run time"
            )
    return bound


def _has_node(value: Any) -> bool:
    if isinstance(value, torch.fx.Node):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_node(v) for v in value)
    return False


def _square(value: Any, what: str, fail: Callable[[str], _Unsupported]) -> int:
    """An int or a pair of equal ints as one int."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
        return int(value[0])
    raise fail(
        f"{what}={tuple(value) if isinstance(value, (tuple, list)) else value!r} (hyperprune's {what} is square)"
    )


def _translate(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> Any:
    """The spec layer(s) of one tensor-valued fx node: a dict, a list of dicts run in turn, or
    None for a no-op.

    Raises:
        _Unsupported: what the spec cannot express, naming the node.
    """
    what, where = _what(node, modules), _where(node)

    def fail(why: str = "") -> _Unsupported:
        return _Unsupported(f"{what} at {where}" + (f" has {why}" if why else ""))

    first = _first(node)
    in_shape = _shape(first) if isinstance(first, torch.fx.Node) else None
    out_shape = _shape(node)

    if node.op == "call_module":
        m = modules[str(node.target)]
        if len(node.args) != 1 or node.kwargs:
            raise fail("other arguments than one input tensor")
        cls = type(m)
        if cls in _SKIPPED_MODULES:
            return None
        if cls is nn.Conv2d:
            return _conv(m, fail)
        if cls is nn.Linear:
            if in_shape is None or len(in_shape) != 2:
                raise fail(f"an input of shape {list(in_shape or ())}; flatten to [batch, features] before it")
            return {"type": "linear", "out_features": m.out_features, "bias": m.bias is not None}
        if cls is nn.BatchNorm2d:
            if not m.affine or not m.track_running_stats or m.running_mean is None:
                raise fail("affine=False or track_running_stats=False (the spec's batchnorm2d has both)")
            if m.momentum is None:
                raise fail("momentum=None (a cumulative average; the spec's momentum is a fraction)")
            return {"type": "batchnorm2d", "eps": float(m.eps), "momentum": float(m.momentum)}
        if cls in _ACTIVATION_MODULES:
            return {"type": _ACTIVATION_MODULES[cls]}
        if cls is nn.GELU:
            if m.approximate != "none":
                raise fail(f"approximate='{m.approximate}' (the spec's gelu is the erf form)")
            return {"type": "gelu"}
        if cls in (nn.MaxPool2d, nn.AvgPool2d):
            settings = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding}
            if cls is nn.MaxPool2d:
                settings.update(dilation=m.dilation, return_indices=m.return_indices)
            else:
                settings.update(divisor_override=m.divisor_override)
            return _pool("maxpool" if cls is nn.MaxPool2d else "avgpool", settings, in_shape, out_shape, fail)
        if cls is nn.AdaptiveAvgPool2d:
            return _adaptive(m.output_size, in_shape, fail)
        if cls is nn.Flatten:
            return _flatten(in_shape, out_shape, fail)
        raise fail()

    if node.op == "call_method":
        method = str(node.target)
        if method in _ACTIVATION_METHODS:
            _bind(node, [("self", _REQUIRED)], modules)
            return {"type": _ACTIVATION_METHODS[method]}
        if method == "contiguous":
            return None
        if method in ("add", "add_"):
            return _add(
                node, _bind(node, [("self", _REQUIRED), ("other", _REQUIRED), ("alpha", 1)], modules, ("other",)), fail
            )
        if method in ("flatten", "view", "reshape"):
            return _flatten(in_shape, out_shape, fail)
        if method == "mean":
            bound = _bind(node, [("self", _REQUIRED), ("dim", None), ("keepdim", False), ("dtype", None)], modules)
            return _mean(bound, in_shape, fail)
        raise fail()

    target = node.target
    if target in _RELU:
        return {"type": "relu"}
    if target in _TANH:
        return {"type": "tanh"}
    if target in _SIGMOID:
        return {"type": "sigmoid"}
    if target is F.gelu:
        bound = _bind(node, [("input", _REQUIRED), ("approximate", "none")], modules)
        if bound["approximate"] != "none":
            raise fail(f"approximate='{bound['approximate']}' (the spec's gelu is the erf form)")
        return {"type": "gelu"}
    if target in _DROPOUT_FUNCTIONS:
        return None
    if target in _ADD:
        return _add(
            node, _bind(node, [("input", _REQUIRED), ("other", _REQUIRED), ("alpha", 1)], modules, ("other",)), fail
        )
    if target in _FLATTEN_LIKE:
        return _flatten(in_shape, out_shape, fail)
    if target is torch.mean:
        bound = _bind(node, [("input", _REQUIRED), ("dim", None), ("keepdim", False), ("dtype", None)], modules)
        return _mean(bound, in_shape, fail)
    if target is F.max_pool2d:
        params = [("input", _REQUIRED), ("kernel_size", _REQUIRED), ("stride", None), ("padding", 0),
                  ("dilation", 1), ("ceil_mode", False), ("return_indices", False)]  # fmt: skip
        return _pool("maxpool", _bind(node, params, modules), in_shape, out_shape, fail)
    if target is F.avg_pool2d:
        params = [("input", _REQUIRED), ("kernel_size", _REQUIRED), ("stride", None), ("padding", 0),
                  ("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None)]  # fmt: skip
        return _pool("avgpool", _bind(node, params, modules), in_shape, out_shape, fail)
    if target is F.adaptive_avg_pool2d:
        bound = _bind(node, [("input", _REQUIRED), ("output_size", _REQUIRED)], modules)
        return _adaptive(bound["output_size"], in_shape, fail)
    raise fail()


def _conv(m: nn.Conv2d, fail: Callable[[str], _Unsupported]) -> Dict[str, Any]:
    if m.groups != 1:
        raise fail(f"groups={m.groups} (hyperprune's conv2d has groups=1)")
    if tuple(m.dilation) != (1, 1):
        raise fail(f"dilation={tuple(m.dilation)} (hyperprune's conv2d has dilation=1)")
    if m.padding_mode != "zeros":
        raise fail(f"padding_mode='{m.padding_mode}' (hyperprune's conv2d pads with zeros)")
    kernel = _square(m.kernel_size, "kernel_size", fail)
    stride = _square(m.stride, "stride", fail)
    if m.padding == "valid":
        padding = 0
    elif m.padding == "same":
        if kernel % 2 == 0:
            raise fail(f"padding='same' with the even kernel {kernel} (uneven padding)")
        padding = (kernel - 1) // 2
    else:
        padding = _square(m.padding, "padding", fail)
    return {
        "type": "conv2d",
        "out_channels": m.out_channels,
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "bias": m.bias is not None,
    }


def _pool(
    kind: str,
    settings: Dict[str, Any],
    in_shape: Optional[Tuple[int, ...]],
    out_shape: Optional[Tuple[int, ...]],
    fail: Callable[[str], _Unsupported],
) -> Dict[str, Any]:
    kernel = _square(settings["kernel_size"], "kernel_size", fail)
    stride_setting = settings.get("stride")
    stride = kernel if stride_setting is None or stride_setting == [] or stride_setting == () else None
    if stride is None:
        stride = _square(stride_setting, "stride", fail)
    if _square(settings.get("padding", 0), "padding", fail) != 0:
        raise fail(f"padding={settings['padding']} (hyperprune's pooling has no padding)")
    if settings.get("dilation", 1) not in (1, (1, 1), [1, 1]):
        raise fail(f"dilation={settings['dilation']} (hyperprune's pooling has dilation=1)")
    if settings.get("return_indices"):
        raise fail("return_indices=True")
    if settings.get("divisor_override") is not None:
        raise fail(f"divisor_override={settings['divisor_override']}")
    if in_shape is None or len(in_shape) != 4:
        raise fail(f"an input of shape {list(in_shape or ())}, expected [batch, C, H, W]")
    floor = tuple((side - kernel) // stride + 1 for side in in_shape[2:])
    if out_shape is None or tuple(out_shape[2:]) != floor:
        raise fail(f"ceil_mode=True, which gives {list(out_shape or ())[2:]} where hyperprune gives {list(floor)}")
    return {"type": kind, "kernel": kernel, "stride": stride}


def _adaptive(output_size: Any, in_shape: Optional[Tuple[int, ...]], fail: Callable[[str], _Unsupported]) -> Any:
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if in_shape is None or len(in_shape) != 4:
        raise fail(f"an input of shape {list(in_shape or ())}, expected [batch, C, H, W]")
    h, w = in_shape[2], in_shape[3]
    size = tuple(h if s is None else s for s in size[:1]) + tuple(w if s is None else s for s in size[1:])
    if size == (1, 1):
        return {"type": "global_avgpool"}
    if size == (h, w):
        return None
    if len(size) == 2 and h % size[0] == 0 and w % size[1] == 0 and h // size[0] == w // size[1]:
        return {"type": "avgpool", "kernel": h // size[0], "stride": h // size[0]}
    raise fail(f"output_size={output_size} on a {h}x{w} map (supported: 1, or a size that divides it evenly)")


def _mean(bound: Dict[str, Any], in_shape: Optional[Tuple[int, ...]], fail: Callable[[str], _Unsupported]) -> Any:
    dims = bound["dim"]
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    if in_shape is None or len(in_shape) != 4 or bound["dtype"] is not None:
        raise fail("a mean that is not over the spatial dimensions of a [batch, C, H, W] map")
    if None in dims or sorted(d % 4 for d in dims) != [2, 3]:
        raise fail(f"dim={bound['dim']} (only the mean over dims (2, 3) is global average pooling)")
    if bound["keepdim"]:
        return {"type": "global_avgpool"}
    return [{"type": "global_avgpool"}, {"type": "flatten"}]


def _flatten(
    in_shape: Optional[Tuple[int, ...]], out_shape: Optional[Tuple[int, ...]], fail: Callable[[str], _Unsupported]
) -> Any:
    if in_shape is None or out_shape is None:
        raise fail("an input that is no tensor of the network")
    if out_shape == in_shape:
        return None
    features = int(np.prod(in_shape[1:]))
    if len(in_shape) == 4 and out_shape == (in_shape[0], features):
        return {"type": "flatten"}
    raise fail(
        f"a reshape of {list(in_shape)} to {list(out_shape)} (only [batch, C, H, W] to [batch, C*H*W] is a flatten)"
    )


def _add(node: torch.fx.Node, bound: Dict[str, Any], fail: Callable[[str], _Unsupported]) -> Dict[str, Any]:
    """An ``add`` of two tensors of one shape; its ``operands`` (fx nodes) say what it reads."""
    first = bound.get("self", bound.get("input"))
    if not (isinstance(first, torch.fx.Node) and isinstance(bound["other"], torch.fx.Node)):
        raise fail("a constant operand (only the sum of two tensors is an add)")
    if bound["alpha"] != 1:
        raise fail(f"alpha={bound['alpha']}")
    if _shape(first) != _shape(bound["other"]):
        raise fail(f"operands of shapes {list(_shape(first) or ())} and {list(_shape(bound['other']) or ())}")
    return {"type": "add", "operands": [first, bound["other"]]}
