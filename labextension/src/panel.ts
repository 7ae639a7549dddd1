/**
 * The Pipeline panel (right sidebar): the active notebook's DAG, drawn in the browser by
 * Graphviz compiled to WebAssembly (@viz-js/viz, bundled into the extension, loaded on first
 * use), each block coloured by its last run's status with its instance counts; a list of the
 * same blocks as buttons (keyboard: Tab, Enter); and the output of the last "Run pipeline"
 * (the run tree widget). Clicking a block, in the graph or the list, scrolls to its cell.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { OutputArea, OutputAreaModel } from '@jupyterlab/outputarea';
import { Widget } from '@lumino/widgets';

import { Badge, describeCells } from './badge';
import { blockStatus, countsLabel, GraphBlock, toDot } from './dag';
import { KernelState } from './kernel';

type Viz = { renderSVGElement(dot: string): SVGSVGElement };
let vizPromise: Promise<Viz> | null = null;
function viz(): Promise<Viz> {
  if (!vizPromise) {
    vizPromise = import('@viz-js/viz').then(m => m.instance() as Promise<Viz>);
  }
  return vizPromise;
}

export interface PanelActions {
  run(): void;
  exportPipeline(): void;
}

/** The blocks of a notebook as the panel draws them, and where their cells are. */
export function graphOf(
  panel: NotebookPanel,
  state: KernelState | undefined
): { blocks: GraphBlock[]; badges: { badge: Badge; index: number }[] } {
  const model = panel.content.model;
  const sources: string[] = [];
  const indices: number[] = [];
  if (model) {
    for (let i = 0; i < model.cells.length; i++) {
      const cell = model.cells.get(i);
      if (cell.type === 'code') {
        sources.push(cell.sharedModel.getSource());
        indices.push(i);
      }
    }
  }
  const kernelBlocks = new Map((state?.blocks ?? []).map(b => [b.name, b]));
  const badges: { badge: Badge; index: number }[] = [];
  const blocks: GraphBlock[] = [];
  describeCells(sources).forEach((badge, k) => {
    if (!badge) {
      return;
    }
    badges.push({ badge, index: indices[k] });
    if (badge.ok) {
      const known = kernelBlocks.get(badge.name);
      // the kernel's edges are exact (it analyses the body); the header's are the fallback
      const sameHeader = known && known.kind === badge.kind && known.dynamic === badge.spec.dynamic;
      blocks.push({
        name: badge.name,
        kind: badge.kind,
        dynamic: badge.spec.dynamic,
        reduce: badge.spec.reduce,
        upstream: sameHeader && badge.inferred ? known!.upstream : badge.upstream
      });
    }
  });
  return { blocks, badges };
}

export class PipelinePanel extends Widget {
  constructor(actions: PanelActions) {
    super();
    this.id = 'mage-nb-pipeline';
    this.addClass('mnb-panel');
    this.title.caption = 'Pipeline (mage_nb)';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Pipeline');
    this.node.innerHTML = `
      <div class="mnb-panel-head">
        <h2 class="mnb-panel-title">Pipeline</h2>
        <div class="mnb-panel-buttons">
          <button type="button" class="jp-Button jp-mod-styled jp-mod-accept mnb-run-button">Run pipeline</button>
          <button type="button" class="jp-Button jp-mod-styled mnb-export-button">Export…</button>
        </div>
      </div>
      <p class="mnb-panel-status" role="status" aria-live="polite"></p>
      <div class="mnb-dag" aria-hidden="true"></div>
      <ul class="mnb-block-list" aria-label="Blocks"></ul>
      <section class="mnb-last-run" aria-label="Last run" hidden>
        <h3>Last run</h3>
        <div class="mnb-last-run-output"></div>
      </section>`;
    this.node.querySelector('.mnb-run-button')!.addEventListener('click', () => actions.run());
    this.node.querySelector('.mnb-export-button')!.addEventListener('click', () => actions.exportPipeline());
    this._dag = this.node.querySelector('.mnb-dag') as HTMLElement;
    this._list = this.node.querySelector('.mnb-block-list') as HTMLElement;
    this._status = this.node.querySelector('.mnb-panel-status') as HTMLElement;
  }

  get notebook(): NotebookPanel | null {
    return this._notebook;
  }

  /** Show this notebook (or none) with the kernel's last state. */
  setNotebook(notebook: NotebookPanel | null, state: KernelState | undefined): void {
    if (notebook !== this._notebook) {
      this._notebook = notebook;
      this._swapOutput(notebook);
    }
    this._state = state;
    this._render();
  }

  /** Run code with its outputs (the run tree) in the panel's "Last run" area. */
  async executeInPanel(code: string): Promise<boolean> {
    const notebook = this._notebook;
    if (!notebook) {
      return false;
    }
    const area = this._outputFor(notebook);
    (this.node.querySelector('.mnb-last-run') as HTMLElement).hidden = false;
    area.model.clear();
    const reply = await OutputArea.execute(code, area, notebook.sessionContext);
    return reply?.content.status === 'ok';
  }

  private _outputFor(notebook: NotebookPanel): OutputArea {
    let area = this._outputs.get(notebook);
    if (!area) {
      // the notebook's rendermime knows its widget manager: the run tree renders here too;
      // trusted like a cell the user ran (widgets are not rendered in untrusted outputs)
      area = new OutputArea({ model: new OutputAreaModel({ trusted: true }), rendermime: notebook.content.rendermime });
      area.addClass('mnb-output');
      this._outputs.set(notebook, area);
      notebook.disposed.connect(() => {
        area!.dispose();
        this._outputs.delete(notebook);
      });
    }
    if (this._notebook === notebook && !area.isAttached) {
      this._attachOutput(area);
    }
    return area;
  }

  private _swapOutput(notebook: NotebookPanel | null): void {
    const host = this.node.querySelector('.mnb-last-run-output') as HTMLElement;
    for (const area of this._outputs.values()) {
      if (area.isAttached) {
        Widget.detach(area);
      }
    }
    host.replaceChildren();
    const area = notebook ? this._outputs.get(notebook) : undefined;
    (this.node.querySelector('.mnb-last-run') as HTMLElement).hidden = !area;
    if (area) {
      this._attachOutput(area);
    }
  }

  private _attachOutput(area: OutputArea): void {
    const host = this.node.querySelector('.mnb-last-run-output') as HTMLElement;
    if (this.isAttached) {
      Widget.attach(area, host);
    } else {
      this._pendingOutput = area;
    }
  }

  protected onAfterAttach(): void {
    if (this._pendingOutput && !this._pendingOutput.isDisposed && !this._pendingOutput.isAttached) {
      Widget.attach(this._pendingOutput, this.node.querySelector('.mnb-last-run-output') as HTMLElement);
    }
    this._pendingOutput = null;
    this._render();
  }

  private _render(): void {
    const notebook = this._notebook;
    const title = this.node.querySelector('.mnb-panel-title') as HTMLElement;
    if (!notebook) {
      title.textContent = 'Pipeline';
      this._status.textContent = 'Open a notebook to see its pipeline.';
      this._list.replaceChildren();
      this._dag.replaceChildren();
      return;
    }
    title.textContent = `Pipeline: ${notebook.title.label}`;
    const state = this._state;
    const { blocks, badges } = graphOf(notebook, state);
    const counts = state?.counts ?? {};
    const bad = badges.filter(b => !b.badge.ok).length;
    const parts = [`${blocks.length} block${blocks.length === 1 ? '' : 's'}`];
    if (state?.run) {
      parts.push(`last run ${state.run.status}`);
    } else {
      parts.push('not run in this kernel yet');
    }
    if (bad) {
      parts.push(`${bad} malformed header${bad === 1 ? '' : 's'}`);
    }
    if (state?.error) {
      parts.push(state.error);
    }
    this._status.textContent = parts.join(' · ');

    // the list: one button per block, the accessible way to the cells
    const items = badges.map(({ badge, index }) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'mnb-block-item';
      if (badge.ok) {
        const status = blockStatus(counts[badge.name]);
        button.classList.add(`mnb-status-${status}`);
        button.dataset.block = badge.name;
        button.dataset.status = status;
        button.innerHTML = `<span class="mnb-dot" aria-hidden="true"></span><span class="mnb-block-name"></span><span class="mnb-block-kind"></span><span class="mnb-block-counts"></span>`;
        button.querySelector('.mnb-block-name')!.textContent = badge.name;
        button.querySelector('.mnb-block-kind')!.textContent = badge.kind;
        button.querySelector('.mnb-block-counts')!.textContent = countsLabel(counts[badge.name]);
        button.setAttribute(
          'aria-label',
          `${badge.kind} block ${badge.name}, ${status.replace('_', ' ')}, ${countsLabel(counts[badge.name])}; go to its cell`
        );
      } else {
        button.classList.add('mnb-status-malformed');
        button.dataset.status = 'malformed';
        button.textContent = `⚠ cell ${index + 1}: ${badge.message}`;
      }
      button.addEventListener('click', () => this._goTo(index));
      li.appendChild(button);
      return li;
    });
    this._list.replaceChildren(...items);

    const dot = toDot(blocks, counts, state?.stale ?? []);
    if (dot === this._lastDot && this._dag.firstChild) {
      return;
    }
    this._lastDot = dot;
    const token = ++this._renderToken;
    if (!blocks.length) {
      this._dag.replaceChildren();
      return;
    }
    viz()
      .then(v => {
        if (token !== this._renderToken) {
          return;
        }
        const svg = v.renderSVGElement(dot);
        svg.removeAttribute('width');
        svg.removeAttribute('height');
        svg.classList.add('mnb-dag-svg');
        // text fill and edge colours come from the theme (CSS), not from Graphviz
        svg.querySelectorAll('g.node').forEach(g => {
          const name = g.id.replace(/^mnb-node-/, '');
          const target = badges.find(b => b.badge.ok && b.badge.name === name);
          g.addEventListener('click', () => target && this._goTo(target.index));
          g.setAttribute('data-block', name);
        });
        this._dag.replaceChildren(svg);
      })
      .catch(err => {
        this._dag.textContent = `The graph could not be drawn: ${err}`;
      });
  }

  private _goTo(index: number): void {
    const notebook = this._notebook;
    if (!notebook) {
      return;
    }
    const content = notebook.content;
    content.activeCellIndex = index;
    content.deselectAll();
    const cell = content.widgets[index];
    if (cell) {
      void content.scrollToCell(cell, 'start').then(() => {
        cell.node.focus();
        cell.addClass('mnb-flash');
        window.setTimeout(() => cell.removeClass('mnb-flash'), 1200);
      });
    }
  }

  private _notebook: NotebookPanel | null = null;
  private _state: KernelState | undefined;
  private _outputs = new Map<NotebookPanel, OutputArea>();
  private _pendingOutput: OutputArea | null = null;
  private _dag: HTMLElement;
  private _list: HTMLElement;
  private _status: HTMLElement;
  private _lastDot = '';
  private _renderToken = 0;
}
