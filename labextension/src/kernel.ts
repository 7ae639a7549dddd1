/**
 * Talking to the notebook's kernel: quiet executions (for commands whose result is a
 * notification) and the `mage_nb.lab` comm that carries the pipeline state after each run.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { splitBlockCell } from './header';
import { Counts } from './dag';

export const COMM_TARGET = 'mage_nb.lab';
export const LAB_MAGIC = '%%mage_nb_lab';

/** What the kernel sends (mage_nb/lab.py `pipeline_state`). */
export interface KernelState {
  version: number;
  blocks: { name: string; kind: string; dynamic: boolean; reduce: string | null; upstream: string[]; cell_id: string | null }[];
  counts: Record<string, Counts>;
  stale: string[];
  run: { run_id: string; status: string } | null;
  error: string | null;
}

export interface QuietResult {
  ok: boolean;
  stdout: string;
  stderr: string;
  ename?: string;
  evalue?: string;
}

/** Run code without a cell, output collected (not shown), no history, no events. */
export async function executeQuietly(kernel: Kernel.IKernelConnection, code: string): Promise<QuietResult> {
  const result: QuietResult = { ok: true, stdout: '', stderr: '' };
  const future = kernel.requestExecute({ code, silent: true, store_history: false, stop_on_error: false, allow_stdin: false });
  future.onIOPub = (msg: KernelMessage.IIOPubMessage) => {
    if (KernelMessage.isStreamMsg(msg)) {
      if (msg.content.name === 'stdout') {
        result.stdout += msg.content.text;
      } else {
        result.stderr += msg.content.text;
      }
    } else if (KernelMessage.isErrorMsg(msg)) {
      result.ok = false;
      result.ename = msg.content.ename;
      result.evalue = msg.content.evalue;
    }
  };
  const reply = await future.done;
  if (reply.content.status !== 'ok') {
    result.ok = false;
    if (reply.content.status === 'error') {
      result.ename = result.ename ?? reply.content.ename;
      result.evalue = result.evalue ?? reply.content.evalue;
    }
  }
  return result;
}

/** The notebook's block cells as `%%mage_nb_lab` sends them: ids and sources, in order. */
export function blockCells(panel: NotebookPanel): { id: string; source: string }[] {
  const cells: { id: string; source: string }[] = [];
  const model = panel.content.model;
  if (!model) {
    return cells;
  }
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    if (cell.type !== 'code') {
      continue;
    }
    const source = cell.sharedModel.getSource();
    if (splitBlockCell(source) !== null) {
      cells.push({ id: cell.id, source });
    }
  }
  return cells;
}

export function labCode(action: string, body: object): string {
  return `${LAB_MAGIC} ${action}\n${JSON.stringify(body)}`;
}

/** The kernel of a session, once it is ready (or an Error saying why there is none). */
export async function kernelOf(context: ISessionContext): Promise<Kernel.IKernelConnection> {
  await context.ready;
  const kernel = context.session?.kernel;
  if (!kernel) {
    throw new Error('this notebook has no kernel');
  }
  return kernel;
}

/** `%load_ext mage_nb` quietly; an Error with the kernel's message if it cannot. */
export async function ensureExtension(kernel: Kernel.IKernelConnection): Promise<void> {
  const r = await executeQuietly(kernel, '%load_ext mage_nb');
  if (!r.ok) {
    throw new Error(`mage_nb could not be loaded in the kernel: ${r.ename}: ${r.evalue}`);
  }
}

/** Pipeline states received from kernels, by kernel id. */
export class KernelStates {
  get changed(): ISignal<this, string> {
    return this._changed;
  }

  get(kernelId: string | undefined): KernelState | undefined {
    return kernelId ? this._states.get(kernelId) : undefined;
  }

  /** Listen on a notebook's kernels (this one and the next ones). */
  watch(context: ISessionContext): void {
    const attach = () => {
      const kernel = context.session?.kernel;
      if (kernel && !this._kernels.has(kernel)) {
        this._kernels.add(kernel);
        kernel.registerCommTarget(COMM_TARGET, (comm, msg) => {
          this._set(kernel.id, msg.content.data as unknown as KernelState);
          comm.onMsg = m => this._set(kernel.id, m.content.data as unknown as KernelState);
        });
        kernel.disposed.connect(() => this._kernels.delete(kernel));
        // a kernel that already ran blocks (a page reload) tells its state when asked
        void kernel.info.then(() => this.request(kernel)).catch(() => undefined);
      }
    };
    context.kernelChanged.connect(attach);
    void context.ready.then(attach);
  }

  /** Ask a kernel that has mage_nb loaded for its state (nothing happens if it has not). */
  async request(kernel: Kernel.IKernelConnection): Promise<void> {
    await executeQuietly(
      kernel,
      "(lambda m: m and m.publish_current())(__import__('sys').modules.get('mage_nb.lab'))"
    );
  }

  private _set(kernelId: string, state: KernelState): void {
    if (!state || typeof state !== 'object' || !Array.isArray(state.blocks)) {
      return;
    }
    this._states.set(kernelId, state);
    this._changed.emit(kernelId);
  }

  private _states = new Map<string, KernelState>();
  private _kernels = new Set<Kernel.IKernelConnection>();
  private _changed = new Signal<this, string>(this);
}
