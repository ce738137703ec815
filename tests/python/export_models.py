#!/usr/bin/python3
"""Reference models for Tessera's tests, built in PyTorch and exported to ONNX.

Every model is built from a fixed seed, put in eval mode and exported with a
dynamic batch axis named "batch" on all inputs and outputs (the transformer's
sequence axis "sequence" is dynamic too). The expected outputs of a test come
from running the same torch module (reference()), never from an ONNX runtime,
so the serving path is checked against an independent implementation.

As a module:
    import export_models as em
    path = em.export('mlp', outdir)
    inputs = em.make_inputs('mlp', batch=7, seed=1)
    expected = em.reference('mlp', inputs)     # {output name: ndarray}

As a command:
    /usr/bin/python3 export_models.py OUTDIR [NAME...]    (default: all)
"""
import collections
import inspect
import os
import sys

import numpy as np
import torch
from torch import nn

Input = collections.namedtuple('Input', 'name dtype shape')  # shape: ints and axis names

Spec = collections.namedtuple('Spec', 'build inputs outputs opset description')

# torch folds eval-mode BatchNorm into the preceding Conv; models listed here
# keep their BatchNormalization nodes (exported as in eval mode all the same).
KEEP_BATCHNORM = {'resnet'}


# ---- modules ---------------------------------------------------------------

class LogisticRegression(nn.Module):
    """Multinomial logistic regression: logits and their softmax."""

    def __init__(self, features, classes):
        super().__init__()
        self.linear = nn.Linear(features, classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        logits = self.linear(x)
        return logits, self.softmax(logits)


def mlp():
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(),
        nn.Linear(64, 64), nn.Tanh(),
        nn.Linear(64, 10), nn.LogSoftmax(dim=1))


def mlp_1mb():
    """A Megatron pair and a head (256 -> 512 -> 256 -> 16): 266 k float32
    parameters, 1.06 MB, nearly all in weight matrices (test_precision)."""
    return nn.Sequential(
        nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.Tanh(),
        nn.Linear(256, 16))


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def mlp_168mb():
    """Two Megatron pairs (2048 -> 5120 -> 2048) and a small head: 42.0 M
    float32 parameters, 168 MB of weights, almost all of them in the four
    big Gemms a tensor split cuts."""
    return nn.Sequential(
        nn.Linear(2048, 5120), nn.ReLU(), nn.Linear(5120, 2048), nn.Tanh(),
        nn.Linear(2048, 5120), nn.ReLU(), nn.Linear(5120, 2048), nn.Tanh(),
        nn.Linear(2048, 16))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn, plus the (projected) input."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.project = None
        if stride != 1 or cin != cout:
            self.project = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.project is None else self.project(x)
        return self.relu(y + shortcut)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2),
                                    BasicBlock(32, 32, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = self.pool(self.blocks(self.stem(x)))
        return self.head(torch.flatten(y, 1))


def resnet():
    model = ResNet()
    # Non-trivial running statistics and affine terms, so that BatchNorm is
    # not close to the identity in eval mode.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


class TokenEncoder(nn.Module):
    """Embedding, a 2-layer TransformerEncoder and a linear head, per token.

    batch_first=False inside (sequence-major), so torch does not take its
    fused eval-mode fast path, which has no ONNX export; the module's own
    interface is batch-major: tokens [batch, sequence] -> [batch, sequence, 16].
    """

    VOCAB = 100

    def __init__(self, d_model=32, heads=4, ff=64, layers=2, out=16):
        super().__init__()
        self.embedding = nn.Embedding(self.VOCAB, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, out)

    def forward(self, tokens):
        x = self.embedding(tokens).transpose(0, 1)
        x = self.encoder(x).transpose(0, 1)
        return self.head(x)


MODELS = collections.OrderedDict([
    ('linear', Spec(lambda: nn.Linear(8, 1),
                    [Input('features', np.float32, ['batch', 8])], ['value'], 13,
                    'linear regression, 8 features')),
    ('logistic', Spec(lambda: LogisticRegression(10, 3),
                      [Input('features', np.float32, ['batch', 10])],
                      ['logits', 'probabilities'], 13,
                      'logistic regression, 10 features, 3 classes (softmax)')),
    ('logistic_binary', Spec(lambda: nn.Sequential(nn.Linear(10, 1), nn.Sigmoid()),
                             [Input('features', np.float32, ['batch', 10])],
                             ['probability'], 13,
                             'binary logistic regression (sigmoid)')),
    ('mlp', Spec(mlp, [Input('embedding', np.float32, ['batch', 32])],
                 ['log_probs'], 13, 'MLP 32-64-64-10, ReLU, Tanh, LogSoftmax')),
    ('mlp_1mb', Spec(mlp_1mb, [Input('features', np.float32, ['batch', 256])],
                     ['scores'], 13, 'MLP 256-512-256-16, 1 MB of weights')),
    ('lenet', Spec(lenet, [Input('image', np.float32, ['batch', 1, 28, 28])],
                   ['logits'], 13, 'LeNet-style CNN on 28x28 images')),
    ('resnet', Spec(resnet, [Input('image', np.float32, ['batch', 3, 32, 32])],
                    ['logits'], 13, 'ResNet-style CNN with BatchNorm and residual adds')),
    ('mlp_168mb', Spec(mlp_168mb, [Input('features', np.float32, ['batch', 2048])],
                       ['scores'], 13, 'MLP 2048-5120-2048-5120-2048-16, 168 MB of weights')),
    ('transformer', Spec(TokenEncoder,
                         [Input('tokens', np.int64, ['batch', 'sequence'])],
                         ['hidden'], 14,
                         '2-layer TransformerEncoder over an Embedding')),
])

SEED = 1234
_modules = {}


def module(name):
    """The torch module of a model, built once per process from SEED."""
    if name not in _modules:
        torch.manual_seed(SEED)
        m = MODELS[name].build()
        m.eval()
        _modules[name] = m
    return _modules[name]


def _concrete(shape, batch, sequence):
    return [batch if d == 'batch' else sequence if d == 'sequence' else d
            for d in shape]


def make_inputs(name, batch, seed=0, sequence=5):
    """Random inputs for `batch` rows (and `sequence` tokens): {name: ndarray}."""
    rng = np.random.RandomState(seed)
    out = collections.OrderedDict()
    for inp in MODELS[name].inputs:
        shape = _concrete(inp.shape, batch, sequence)
        if np.issubdtype(inp.dtype, np.integer):
            out[inp.name] = rng.randint(0, TokenEncoder.VOCAB, size=shape).astype(inp.dtype)
        else:
            out[inp.name] = rng.standard_normal(shape).astype(inp.dtype)
    return out


def reference(name, inputs):
    """Runs the torch module on {input name: ndarray}: {output name: ndarray}."""
    spec = MODELS[name]
    args = [torch.from_numpy(np.ascontiguousarray(inputs[i.name])) for i in spec.inputs]
    with torch.no_grad():
        result = module(name)(*args)
    if isinstance(result, torch.Tensor):
        result = (result,)
    return collections.OrderedDict(
        (n, t.detach().numpy().copy()) for n, t in zip(spec.outputs, result))


def export(name, outdir):
    """Exports a model to OUTDIR/NAME.onnx and returns the path."""
    spec = MODELS[name]
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, name + '.onnx')
    example = make_inputs(name, batch=2, seed=0)
    args = tuple(torch.from_numpy(example[i.name]) for i in spec.inputs)
    dynamic = {}
    for i in spec.inputs:
        dynamic[i.name] = {k: d for k, d in enumerate(i.shape) if isinstance(d, str)}
    for o in spec.outputs:
        dynamic[o] = {0: 'batch'}
        if name == 'transformer':
            dynamic[o][1] = 'sequence'
    # torch >= 2.5 has a second exporter (dynamo), the default from 2.9; these
    # models are written for the TorchScript one, the only one of torch 1.13.
    legacy = ({'dynamo': False}
              if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {})
    with torch.no_grad():
        torch.onnx.export(module(name), args, path, **legacy,
                          input_names=[i.name for i in spec.inputs],
                          output_names=list(spec.outputs),
                          dynamic_axes=dynamic, opset_version=spec.opset,
                          do_constant_folding=name not in KEEP_BATCHNORM,
                          training=torch.onnx.TrainingMode.PRESERVE
                          if name in KEEP_BATCHNORM else torch.onnx.TrainingMode.EVAL)
    return path


def main(argv):
    if len(argv) < 2 or argv[1] in ('-h', '--help'):
        print(__doc__.strip())
        print('\nmodels:')
        for n, s in MODELS.items():
            print('  %-16s %s' % (n, s.description))
        return 0 if len(argv) >= 2 else 2
    names = argv[2:] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print('export_models.py: unknown model(s): %s' % ', '.join(unknown), file=sys.stderr)
        return 2
    for n in names:
        print(export(n, argv[1]))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
