"""`tff-orchestra`: the command line.

    tff-orchestra train --output-dir runs/digits [--dataset digits] [--clients 10] [--alpha 0.1]
        [--rounds 20] [--clients-per-round 10] [--seed 0] [--encoder small_cnn]
        [--aggregator cluster_quality:num_clusters=4 --aggregator gaussian_noise:noise_multiplier=0.5,clip=1.0
         --aggregator secure_sum:bits=20] [--plugin my_module] [--workers host:port,host:port] [--resume] ...
    tff-orchestra train --config examples/digits.toml [--output-dir runs/other] [any flag above]
    tff-orchestra aggregators [--plugin my_module]
    tff-orchestra fedavg-demo [--rounds N] [--clients N] [--seed N] [--noise-multiplier Z]
    tff-orchestra --version

`train`'s flags are made from `training.TrainConfig`'s fields (`tff-orchestra
train --help` lists them by section); `--config` reads the same settings from a
TOML file, and every run writes its own as `config.toml`.
`--aggregator` may repeat; the stages chain in the order given (client -> server),
and the chain yields the mean update. `--plugin` imports a module that registers
its own aggregators or encoders (`aggregators.register_aggregator`,
`orchestra.register_encoder`).
`--workers` runs the rounds on TFF worker_binaries already running there
(docs/guide/remote-workers.md), the clients split across them; by default a local worker runs them.
Bad input ends with one error line, not a traceback, and leaves existing output alone.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Optional, Sequence

from tff_orchestra import settings

if TYPE_CHECKING:
  from tff_orchestra.training import TrainConfig


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _non_negative_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
  if not value >= 0.0:
    raise argparse.ArgumentTypeError(f'must be a number >= 0, got {text}')
  return value


def version_text() -> str:
  """This package's installed version and TFF's, read from their metadata (importing neither)."""
  versions = []
  for name in ('tff_orchestra', 'tensorflow-federated'):
    try:
      versions.append(metadata.version(name))
    except metadata.PackageNotFoundError:
      versions.append('not installed')
  return f'tff-orchestra {versions[0]} (TensorFlow Federated {versions[1]})'


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='tff-orchestra', description=__doc__.split('\n')[0])
  parser.add_argument('--version', action='version', version=version_text())
  parser.add_argument('--debug', action='store_true', help='show the traceback of an unexpected error')
  # --debug after the command works too (SUPPRESS: not given there, the top-level value stays).
  debug = argparse.ArgumentParser(add_help=False)
  debug.add_argument('--debug', action='store_true', default=argparse.SUPPRESS, help=argparse.SUPPRESS)
  commands = parser.add_subparsers(dest='command', required=True)

  train = commands.add_parser(
      'train', parents=[debug], help='train Orchestra with federated averaging and evaluate it',
      description='Every setting has a flag; --config RUN.toml sets them from a file, and flags given override it.',
  )
  train.add_argument(
      '--config', metavar='RUN.toml',
      help="a run file, one [section] per group below (every run writes its own as config.toml); flags given override it (default: none)",
  )
  train.add_argument('--resume', action='store_true', help='continue the run in --output-dir, if there is one (default: start a new run)')
  from tff_orchestra.training import TrainConfig  # pylint: disable=import-outside-toplevel

  settings.add_arguments(train, TrainConfig)

  listing = commands.add_parser('aggregators', parents=[debug], help='list the aggregator names for --aggregator, with their keys, defaults and an example')
  listing.add_argument('--plugin', action='append', default=[], metavar='MODULE', help='import this module first, to list what it registers (repeatable)')

  demo = commands.add_parser(
      'fedavg-demo', parents=[debug],
      help="TFF federated averaging on digits with this library's three factories chained",
  )
  demo.add_argument('--rounds', type=_positive_int, default=10, metavar='N',
                    help='federated averaging rounds (default: %(default)s)')
  demo.add_argument('--clients', type=_positive_int, default=10, metavar='N',
                    help='digits clients, all in every round (default: %(default)s)')
  demo.add_argument('--seed', type=int, default=0, metavar='N', help='seed of the data split, the model and the cluster-quality sketch (default: %(default)s)')
  demo.add_argument('--noise-multiplier', type=_non_negative_float, default=0.05, metavar='Z',
                    help="GaussianNoise's noise multiplier (default: %(default)s)")
  return parser


def train_config(args: argparse.Namespace) -> 'TrainConfig':
  """The run parsed `train` flags describe: --config's file (or the defaults), then each flag given."""
  from tff_orchestra.training import TrainConfig  # pylint: disable=import-outside-toplevel

  given = settings.given_arguments(args)
  if args.config:
    return TrainConfig.from_toml(args.config, given)
  if 'run.output_dir' not in given:
    raise settings.ConfigError('--output-dir is required (or output_dir in the [run] of a --config file)')
  return settings.from_mapping(TrainConfig, {}, given)


def _named(error: Exception, args: argparse.Namespace) -> str:
  """A bad setting named as the user gave it: by its flag, or by its place in the --config file.

  Other settings the message mentions are named the same way: as flags, unless a
  --config file gave the run (then as its `section.key`).
  """
  from tff_orchestra.training import TrainConfig  # pylint: disable=import-outside-toplevel

  path = getattr(error, 'path', None)
  field = settings.leaves(TrainConfig).get(path)
  if args.config and (field is None or path not in settings.given_arguments(args)):
    return f'{args.config}: {error}' if field is not None else str(error)
  if field is None:
    return settings.named_as_flags(TrainConfig, str(error))
  problem = settings.named_as_flags(TrainConfig, error.problem)
  return f'argument {settings.flag_of(field)}: {problem}, got {error.value!r}'


def _leave_nothing_behind() -> None:
  """Registers the exit hook (it loads TensorFlow): no worker and no teardown noise outlive the command."""
  from tff_orchestra.runtime import workers  # pylint: disable=import-outside-toplevel

  workers.register_exit_hook()


def _train(args: argparse.Namespace) -> int:
  try:
    config = train_config(args)  # before TensorFlow loads: a bad setting answers at once
  except settings.ConfigError as error:
    print(f'tff-orchestra: error: {_named(error, args)}', file=sys.stderr)
    return 2

  _leave_nothing_behind()
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from tff_orchestra import runtime  # pylint: disable=import-outside-toplevel
  from tff_orchestra import training  # pylint: disable=import-outside-toplevel
  from tff_orchestra.evaluation import format_table  # pylint: disable=import-outside-toplevel
  from tff_orchestra.training import checkpoints  # pylint: disable=import-outside-toplevel
  from tff_orchestra.training import loop  # pylint: disable=import-outside-toplevel

  tf.get_logger().setLevel('ERROR')  # Keras deprecation notices would bury the progress bar.

  def saved() -> str:
    checkpoint = checkpoints.latest_checkpoint(config.run.output_dir)
    if checkpoint is None:
      return 'no round is checkpointed yet: rerun this command to start again'
    return f'round {checkpoint[0]} is the last one checkpointed: rerun this command with --resume to continue'

  try:
    result = training.run(config, resume=args.resume)
  except training.ConfigError as error:
    print(f'tff-orchestra: error: {_named(error, args)}', file=sys.stderr)
    return 2
  except runtime.WorkerUnavailableError as error:
    print(f'tff-orchestra: error: {error}; {saved()}', file=sys.stderr)
    return 1
  except (loop.RunInterrupted, KeyboardInterrupt):
    print(f'tff-orchestra: interrupted; {saved()}', file=sys.stderr)
    return INTERRUPTED
  print(result['partition'])
  print(format_table(result['table']))
  print(f'outputs in {config.run.output_dir}')
  return 0


def _list_aggregators(args: argparse.Namespace) -> int:
  _leave_nothing_behind()
  from tff_orchestra.aggregators import registry  # pylint: disable=import-outside-toplevel
  from tff_orchestra.training import config  # pylint: disable=import-outside-toplevel

  try:
    config.load_plugins(args.plugin)
  except settings.ConfigError as error:
    print(f'tff-orchestra: error: {error}', file=sys.stderr)
    return 2
  for name, entry in sorted(registry.registered_aggregators().items()):
    print(f'{name}: {entry.summary}')
    print(f'    keys: {_keys_text(entry)}')
    if entry.example:
      print(f'    example: --aggregator {entry.example}')
  return 0


def _keys_text(entry) -> str:
  """A registered aggregator's keys with their defaults: the builder's, or what the run fills in."""
  from tff_orchestra.training import TrainConfig, config  # pylint: disable=import-outside-toplevel

  shown, python_only = [], []
  for key, default in entry.key_defaults.items():
    if key.endswith('_factory'):
      python_only.append(key)  # a factory object: no spec value can give one
    elif key in entry.run_defaults:
      setting = config.RUN_CONTEXT_SETTINGS.get(entry.run_defaults[key])
      source = settings.named_as_flags(TrainConfig, setting) if setting else "the run's client sampling"
      shown.append(f'{key}=({source})')
    elif default is inspect.Parameter.empty:
      shown.append(f'{key} (required)')
    else:
      shown.append(f'{key}={default!r}')
  words = [f'{key}={word}' for key, named in entry.named_values.items() for word in named]
  return (', '.join(shown) or '-') + (f'; also {", ".join(words)}' if words else '') + (
      f'; in Python only: {", ".join(python_only)}' if python_only else '')


def _one_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines() or ['']
  return f'{type(error).__name__}: {lines[0]}' + (' ...' if len(lines) > 1 else '')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs a command. Exit codes: 0 done, 2 bad input, 1 a failure while running, 130 interrupted."""
  # TensorFlow's C++ start-up chatter would bury the output: level 2 still lets
  # through three "Unable to register cuDNN/cuFFT/cuBLAS factory" errors that
  # TensorFlow 2.14 logs on every import, GPU or not. Our own errors reach the
  # user as Python exceptions. TensorFlow loads after this line; a value the
  # user set is kept.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  args = build_parser().parse_args(argv)  # no TensorFlow yet: --help and bad flags answer at once
  try:
    return _COMMANDS[args.command](args)
  except KeyboardInterrupt:
    print('tff-orchestra: interrupted', file=sys.stderr)
    return INTERRUPTED
  except Exception as error:  # pylint: disable=broad-except  (one line, unless --debug)
    if args.debug:
      raise
    print(f'tff-orchestra: error: {_one_line(error)} (--debug shows the traceback)', file=sys.stderr)
    return 1


def _fedavg_demo(args: argparse.Namespace) -> int:
  _leave_nothing_behind()
  from tff_orchestra import fedavg_demo  # pylint: disable=import-outside-toplevel

  fedavg_demo.run(args.rounds, args.clients, args.seed, args.noise_multiplier)
  return 0


_COMMANDS = {'train': _train, 'aggregators': _list_aggregators, 'fedavg-demo': _fedavg_demo}
INTERRUPTED = 130  # the shell's code for a program stopped by Ctrl-C (128 + SIGINT)


if __name__ == '__main__':
  sys.exit(main())
