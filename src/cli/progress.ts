/**
 * Progress bars of long CLI runs (`tether flash` uploads and verifies), drawn with the
 * cli-progress library: redrawn in place at most 10 times a second, with the percentage,
 * the amount done and an ETA. A bar is drawn only on a terminal and never with `--json`
 * ({@link barWanted}); otherwise nothing is drawn at all (no percentage lines), and the
 * caller's log lines are the only output.
 */
import cliProgress from 'cli-progress';

/** Whether a long run should draw a bar on `stream`: only a terminal, never with `--json`. */
export function barWanted(stream: NodeJS.WriteStream, json: boolean): boolean {
  return stream.isTTY === true && !json;
}

/** Options of {@link ProgressBar}. */
export interface ProgressBarOptions {
  /** Where the bar goes. @default process.stderr */
  stream?: NodeJS.WriteStream;
  /** Draw at all. @default {@link barWanted}(stream, false) */
  enabled?: boolean;
  /** What `done`/`total` count: `bytes` prints KB (1 decimal), `items` plain counts. @default 'bytes' */
  unit?: 'bytes' | 'items';
}

/**
 * One bar at a time: `update(label, done, total)` draws it (a new bar when the label or the
 * total changes, the old one finished on its own line); it finishes by itself when `done`
 * reaches `total`. `log(line)` finishes the bar and writes a line. Call {@link stop} when the
 * run ends, whichever way: an unfinished bar keeps a redraw timer running.
 */
export class ProgressBar {
  private readonly stream: NodeJS.WriteStream;
  private readonly enabled: boolean;
  private readonly unit: 'bytes' | 'items';
  private bar?: cliProgress.SingleBar;
  private label = '';
  private total = 0;

  constructor(o: ProgressBarOptions = {}) {
    this.stream = o.stream ?? process.stderr;
    this.enabled = o.enabled ?? barWanted(this.stream, false);
    this.unit = o.unit ?? 'bytes';
  }

  /** True while a bar is drawn. */
  get active(): boolean {
    return this.bar !== undefined;
  }

  /** Show `done` of `total` (bytes or items) for `label`. Does nothing when disabled. */
  update(label: string, done: number, total: number): void {
    if (!this.enabled) return;
    if (this.bar && (label !== this.label || total !== this.total)) this.stop();
    if (!this.bar) {
      const kb = (v: number) => (v / 1024).toFixed(1);
      const unit = this.unit;
      this.bar = new cliProgress.SingleBar({
        stream: this.stream,
        format: `${label} [{bar}] {percentage}% {value}/{total}${unit === 'bytes' ? ' KB' : ''} | ETA {eta_formatted}`,
        barCompleteChar: '#',
        barIncompleteChar: '.',
        barsize: 30,
        hideCursor: false,
        linewrap: true,
        formatValue: (v, _opts, type) => (unit === 'bytes' && (type === 'value' || type === 'total') ? kb(v) : String(v)),
      });
      this.label = label;
      this.total = total;
      this.bar.start(total, 0);
    }
    this.bar.update(Math.min(done, total));
    if (done >= total) this.stop();
  }

  /** Finish the current bar (drawn once more as it stands, then a newline). Idempotent. */
  stop(): void {
    const b = this.bar;
    this.bar = undefined;
    b?.stop();
  }

  /** Finish the bar, then write `line` (a newline is added). */
  log(line: string): void {
    this.stop();
    this.stream.write(`${line}\n`);
  }
}
