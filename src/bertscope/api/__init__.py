"""What the `bertscope` commands do, as functions: the CLI only parses options, calls one of these and prints.

    import bertscope
    result = bertscope.finetune("../shared/models/minilm-l6-h384", "train.tsv", "runs/sst2", eval="dev.tsv",
                                epochs=1)
    print(result.best)

Every function checks what it is given before long work (options, files, the output folder), raises one of the
errors of errors.py for a user's mistake, and reports progress through `on_event(dict)` instead of printing.
    common.py     devices, threads, bf16, loading a model with its tokenizer
    training.py   finetune, resume, pretrain (the one training engine, train/, with a task from tasks/)
    corpus.py     train_tokenizer (with its [UNK] rate on held-out text), masks (what pretraining masks, by line)
    running.py    evaluate, predict, embed, streamed chunk by chunk; quantize (an int8 folder)
    models.py     encode, trace, check, fill_mask, bench, the built-in shapes
"""

from .common import Loaded, load, pick_device, place
from .corpus import masks, train_tokenizer
from .models import bench, builtin_shapes, check, encode, fill_mask, trace
from .running import embed, evaluate, predict, quantize
from .training import check_resume_options, check_settings, finetune, pretrain, resume

__all__ = ["Loaded", "bench", "builtin_shapes", "check", "check_resume_options", "check_settings", "embed", "encode", "evaluate", "fill_mask", "finetune",
           "load", "masks", "pick_device", "place", "predict", "pretrain", "quantize", "resume", "trace",
           "train_tokenizer"]
