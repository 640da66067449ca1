"""`tff-orchestra`: the command line.

    tff-orchestra train --output-dir runs/digits [--dataset digits] [--clients 10] [--alpha 0.1]
        [--rounds 20] [--clients-per-round 10] [--seed 0] [--encoder small_cnn]
        [--aggregator cluster_quality:num_clusters=4 --aggregator gaussian_noise:noise_multiplier=0.5,clip=1.0
         --aggregator secure_sum:bits=20] [--plugin my_module] [--workers host:port,host:port] [--resume] ...
    tff-orchestra aggregators [--plugin my_module]
    tff-orchestra fedavg-demo [--rounds N] [--clients N] [--seed N] [--noise-multiplier Z]

`--aggregator` may repeat; the stages chain in the order given (client -> server),
and the chain yields the mean update. `--plugin` imports a module that registers
its own aggregators or encoders (`aggregators.register_aggregator`,
`orchestra.register_encoder`).
`--workers` runs the rounds on TFF worker_binaries already running there (README,
"Remote workers"), the clients split across them; by default a local worker runs them.
Bad input ends with one error line, not a traceback, and leaves existing output alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _non_negative_float(text: str) -> float:
  value = float(text)
  if not value >= 0.0:
    raise argparse.ArgumentTypeError(f'must be a number >= 0, got {text}')
  return value


def _positive_float(text: str) -> float:
  value = float(text)
  if not value > 0.0:
    raise argparse.ArgumentTypeError(f'must be a number > 0, got {text}')
  return value


def _worker_addresses(text: str) -> list[str]:
  from tff_orchestra import runtime  # pylint: disable=import-outside-toplevel

  try:
    return runtime.parse_worker_addresses(text)
  except ValueError as error:
    raise argparse.ArgumentTypeError(str(error).removeprefix('workers: ')) from error


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `train` (shared with benchmarks/orchestra_quality.py)."""
  from tff_orchestra.training import TrainConfig  # pylint: disable=import-outside-toplevel

  DEFAULTS = TrainConfig  # pylint: disable=invalid-name
  parser.add_argument('--dataset', default='digits', help='digits (ships with scikit-learn), cifar10 or cifar100')
  parser.add_argument('--data-dir', help='folder with the CIFAR python archive (cifar-10-python.tar.gz, ...)')
  parser.add_argument('--clients', type=_positive_int, default=DEFAULTS.num_clients)
  parser.add_argument('--alpha', type=_positive_float, default=DEFAULTS.alpha, help='Dirichlet concentration of label skew')
  parser.add_argument('--rounds', type=_positive_int, default=DEFAULTS.rounds, help='training rounds after the initialisation round 0')
  parser.add_argument('--clients-per-round', type=_positive_int, default=DEFAULTS.clients_per_round)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
      '--encoder', default='small_cnn',
      help='small_cnn (8x8, 28x28), resnet18 (32x32), or a name a --plugin registers',
  )
  parser.add_argument(
      '--aggregator', action='append', default=[], metavar='NAME[:KEY=VALUE,...]',
      help='a stage of the model-update aggregation chain (repeat: chained in order, the result '
      'averages); names and keys: tff-orchestra aggregators',
  )
  parser.add_argument(
      '--plugin', action='append', default=[], metavar='MODULE',
      help='import this module first; it may register aggregators and encoders (repeatable)',
  )
  parser.add_argument(
      '--client-weighting', default='examples', choices=('examples', 'uniform'),
      help='weight of a client update: its number of examples, or 1 (use uniform under DP noise)',
  )
  parser.add_argument('--batch-size', type=_positive_int, default=DEFAULTS.batch_size)
  parser.add_argument('--local-epochs', type=_positive_int, default=DEFAULTS.local_epochs)
  parser.add_argument('--projection-dim', type=_positive_int, default=DEFAULTS.projection_dim)
  parser.add_argument('--global-clusters', type=_positive_int, default=DEFAULTS.num_global_clusters)
  parser.add_argument('--local-clusters', type=_positive_int, default=DEFAULTS.num_local_clusters)
  parser.add_argument('--memory-size', type=_positive_int, default=DEFAULTS.memory_size)
  parser.add_argument('--learning-rate', type=_positive_float, default=DEFAULTS.client_learning_rate)
  parser.add_argument('--global-clustering-steps', type=_positive_int, default=DEFAULTS.global_clustering_steps)
  parser.add_argument('--min-crop-area', type=_positive_float, default=DEFAULTS.min_crop_area, help='smallest area a random crop keeps')
  parser.add_argument('--no-flip', action='store_true', help='no random horizontal flips (e.g. for digits)')
  parser.add_argument('--labels-per-class', type=_positive_int, default=DEFAULTS.labels_per_class, help='labels of the few-label probe')


def train_config(args: argparse.Namespace, output_dir: str):
  """The `TrainConfig` for parsed `add_train_arguments` options."""
  from tff_orchestra import training  # pylint: disable=import-outside-toplevel

  return training.TrainConfig(
      output_dir=output_dir,
      dataset=args.dataset,
      data_dir=args.data_dir,
      num_clients=args.clients,
      alpha=args.alpha,
      rounds=args.rounds,
      clients_per_round=args.clients_per_round,
      seed=args.seed,
      encoder=args.encoder,
      aggregators=tuple(args.aggregator),
      plugins=tuple(args.plugin),
      client_weighting=args.client_weighting,
      batch_size=args.batch_size,
      local_epochs=args.local_epochs,
      projection_dim=args.projection_dim,
      num_global_clusters=args.global_clusters,
      num_local_clusters=args.local_clusters,
      memory_size=args.memory_size,
      client_learning_rate=args.learning_rate,
      global_clustering_steps=args.global_clustering_steps,
      min_crop_area=args.min_crop_area,
      flip=not args.no_flip,
      labels_per_class=args.labels_per_class,
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='tff-orchestra', description=__doc__.split('\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)

  train = commands.add_parser('train', help='train Orchestra with federated averaging and evaluate it')
  train.add_argument('--output-dir', required=True, help='where config, checkpoints, metrics and plots go')
  add_train_arguments(train)
  train.add_argument('--resume', action='store_true', help='continue the run in --output-dir, if there is one')
  train.add_argument('--no-progress', action='store_true', help='no progress bar')
  train.add_argument(
      '--workers', type=_worker_addresses, metavar='HOST:PORT,...',
      help='run on these TFF worker_binaries (clients split across them) instead of a local one',
  )
  train.add_argument(
      '--worker-timeout', type=_positive_float, default=30.0, metavar='SECONDS',
      help='how long a remote worker may not answer before the run stops with an error naming it',
  )

  listing = commands.add_parser('aggregators', help='list the aggregator names for --aggregator, with their keys')
  listing.add_argument('--plugin', action='append', default=[], metavar='MODULE', help='import this module first')

  demo = commands.add_parser(
      'fedavg-demo',
      help="TFF federated averaging on digits with this library's three factories chained",
  )
  demo.add_argument('--rounds', type=_positive_int, default=10)
  demo.add_argument('--clients', type=_positive_int, default=10)
  demo.add_argument('--seed', type=int, default=0)
  demo.add_argument('--noise-multiplier', type=_non_negative_float, default=0.05)
  return parser


def _train(args: argparse.Namespace) -> int:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from tff_orchestra import runtime  # pylint: disable=import-outside-toplevel
  from tff_orchestra import training  # pylint: disable=import-outside-toplevel
  from tff_orchestra.evaluation import format_table  # pylint: disable=import-outside-toplevel
  from tff_orchestra.training import checkpoints  # pylint: disable=import-outside-toplevel

  tf.get_logger().setLevel('ERROR')  # Keras deprecation notices would bury the progress bar.

  config = train_config(args, args.output_dir)
  try:
    result = training.run(
        config, resume=args.resume, progress=not args.no_progress,
        workers=args.workers, worker_timeout=args.worker_timeout,
    )
  except training.ConfigError as error:
    print(f'tff-orchestra: error: {error}', file=sys.stderr)
    return 2
  except runtime.WorkerUnavailableError as error:
    checkpoint = checkpoints.latest_checkpoint(config.output_dir)
    saved = f'round {checkpoint[0]} is the last one checkpointed' if checkpoint else 'no round is checkpointed yet'
    print(
        f'tff-orchestra: error: {error}; {saved}: rerun this command with --resume to continue',
        file=sys.stderr,
    )
    return 1
  print(result['partition'])
  print(format_table(result['table']))
  print(f'outputs in {config.output_dir}')
  return 0


def _list_aggregators(args: argparse.Namespace) -> int:
  from tff_orchestra import training  # pylint: disable=import-outside-toplevel
  from tff_orchestra.aggregators import registry  # pylint: disable=import-outside-toplevel
  from tff_orchestra.training import config  # pylint: disable=import-outside-toplevel

  try:
    config.load_plugins(args.plugin)
  except training.ConfigError as error:
    print(f'tff-orchestra: error: {error}', file=sys.stderr)
    return 2
  for name, entry in sorted(registry.registered_aggregators().items()):
    print(f'{name}: {entry.summary}')
    defaults = ', '.join(f'{key} (default: --{field.replace("_", "-")})' for key, field in entry.run_defaults.items())
    print(f'    keys: {", ".join(entry.keys) or "-"}' + (f'; {defaults}' if defaults else ''))
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  # TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) would bury
  # the output; TensorFlow loads after this line. A value the user set is kept.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  args = build_parser().parse_args(argv)
  from tff_orchestra.runtime import workers  # pylint: disable=import-outside-toplevel

  workers.register_exit_hook()  # every command leaves no worker and no teardown noise behind
  if args.command == 'train':
    return _train(args)
  if args.command == 'aggregators':
    return _list_aggregators(args)
  from tff_orchestra import fedavg_demo  # pylint: disable=import-outside-toplevel

  fedavg_demo.run(args.rounds, args.clients, args.seed, args.noise_multiplier)
  return 0


if __name__ == '__main__':
  sys.exit(main())
