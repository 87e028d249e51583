"""Where PyTorch and Keras disagree by default, and the one setting both suites use.

Every framework-divergent convention the study depends on lives here, so a reader can check parity in
one place and neither suite hard-codes its own choice.
"""

# BatchNorm. PyTorch updates running = (1 - m) * running + m * batch with m = 0.1; Keras updates
# running = m * running + (1 - m) * batch with m = 0.99 by default. Same EMA, opposite meaning of "momentum".
BN_MOMENTUM_TORCH = 0.1
BN_MOMENTUM_KERAS = 1.0 - BN_MOMENTUM_TORCH  # 0.9, not Keras' default 0.99
# PyTorch eps 1e-5, Keras default 1e-3: with Keras' default the logits of transferred weights differ by ~1e-3.
BN_EPS = 1e-5

# Padding. Keras "same" at stride 2 pads 0 before and 1 after (TF's asymmetric rule) while PyTorch's
# padding=1 pads 1 on both sides, which shifts every strided feature map by one pixel. Strided Keras convs
# therefore use an explicit symmetric ZeroPadding2D(k // 2) and a "valid" conv; at stride 1 "same" already
# is the symmetric k // 2 padding and is used as is (an extra pad layer per conv costs ~1/3 of training).
CONV_PADDING = "stride 1: same; stride 2: ZeroPadding2D(k//2) + valid"

# Layout. The neutral state (shared.state) stores conv kernels OIHW and linear weights (out, in), PyTorch's
# layouts; Keras kernels are HWIO and (in, out) and are transposed on import/export. Keras models run NHWC,
# so the flatten before VGG's classifier sees a 1x1 map and needs no reordering.
NEUTRAL_CONV_LAYOUT = "OIHW"
NEUTRAL_LINEAR_LAYOUT = "OI"

# Weight decay. torch.optim.SGD(weight_decay=wd) adds wd * w to the gradient before momentum (coupled L2).
# Keras' optimizer weight_decay is decoupled (w -= lr * wd * w after the update), which is a different
# algorithm under momentum; Keras therefore uses kernel_regularizer=l2(wd / 2), whose gradient is wd * w.
# Both suites decay conv and linear weights only, never biases or BN parameters.
def keras_l2_factor(weight_decay: float) -> float:
    return weight_decay / 2.0


# Nesterov SGD. PyTorch: buf = mu * buf + g; w -= lr * (g + mu * buf). Keras: v = mu * v - lr * g;
# w += mu * v - lr * g. They coincide only when lr is constant (v = -lr * buf): under a per-step schedule
# Keras' buffer remembers past LRs (measured: a 5% different second step on a short linear decay), so the
# Keras suite trains with PyTorch's form (tensorflow_impl.train.TorchFormSGD).
NESTEROV_NOTE = "PyTorch's form in both suites"

# Label smoothing. torch CrossEntropyLoss(label_smoothing=e) and Keras CategoricalCrossentropy(label_smoothing=e)
# both mix the one-hot target with the uniform distribution: target = (1 - e) * onehot + e / K.

# BatchNorm running variance. PyTorch updates running_var with the unbiased batch variance (n / (n - 1));
# Keras uses the biased one. Normalisation during training is identical; the running statistics differ by
# that factor per update, which is negligible for conv BN (n = batch x H x W) and ~1/batch for VGG's FC BN.
BN_RUNNING_VAR = "torch unbiased, keras biased"
