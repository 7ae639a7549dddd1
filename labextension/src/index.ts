/**
 * mage_nb in JupyterLab: block badges on cells, pipeline commands (palette, notebook
 * toolbar, context menu) and the Pipeline panel in the right sidebar.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { CommandToolbarButton, Dialog, ICommandPalette, Notification, showDialog } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { Badge, describeCells } from './badge';
import { blockCells, ensureExtension, executeQuietly, kernelOf, KernelStates, labCode } from './kernel';
import { PipelinePanel } from './panel';

const PLUGIN_ID = 'mage-nb:plugin';
export const CommandIDs = {
  run: 'mage-nb:run-pipeline',
  dag: 'mage-nb:show-dag',
  export: 'mage-nb:export-pipeline'
};

const pipelineIcon = new LabIcon({
  name: 'mage-nb:pipeline',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">' +
    '<g class="jp-icon3" fill="#616161"><rect x="1" y="1" width="6" height="4" rx="1"/>' +
    '<rect x="9" y="6" width="6" height="4" rx="1"/><rect x="1" y="11" width="6" height="4" rx="1"/>' +
    '<path d="M4 5v6h1V5zM7 3h4v3h-1V4H7zM10 10v3H7v-1h2v-2z"/></g></svg>'
});
const exportIcon = new LabIcon({
  name: 'mage-nb:export',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">' +
    '<g class="jp-icon3" fill="#616161"><path d="M8 1l4 4h-3v6H7V5H4z"/><path d="M2 10h2v3h8v-3h2v5H2z"/></g></svg>'
});
const runIcon = new LabIcon({
  name: 'mage-nb:run',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">' +
    '<g class="jp-icon3" fill="#616161"><path d="M2 2l7 6-7 6z"/><rect x="10" y="3" width="5" height="3" rx="1"/>' +
    '<rect x="10" y="10" width="5" height="3" rx="1"/></g></svg>'
});

// -- badges ----------------------------------------------------------------------------------
const BADGE_CLASS = 'mnb-badge';

function renderBadge(cell: Cell, badge: Badge | null): void {
  const host = cell.node.querySelector(':scope > .jp-CellHeader') ?? cell.node;
  let node = host.querySelector(`:scope > .${BADGE_CLASS}`) as HTMLElement | null;
  if (badge === null) {
    node?.remove();
    cell.removeClass('mnb-block-cell');
    return;
  }
  const key = JSON.stringify(badge.ok ? [badge.text, badge.flags] : [badge.message]);
  if (node && node.dataset.key === key) {
    return;
  }
  if (!node) {
    node = document.createElement('div');
    node.className = BADGE_CLASS;
    node.setAttribute('role', 'note');
    node.tabIndex = 0;
    host.insertBefore(node, host.firstChild);
  }
  cell.addClass('mnb-block-cell');
  node.dataset.key = key;
  node.replaceChildren();
  if (!badge.ok) {
    node.classList.add('mnb-badge-warning');
    node.dataset.kind = '';
    node.dataset.name = '';
    const text = document.createElement('span');
    text.className = 'mnb-badge-message';
    text.textContent = `⚠ ${badge.message}`;
    node.appendChild(text);
    node.title = `Malformed block header: ${badge.message}`;
    node.setAttribute('aria-label', `Malformed block header: ${badge.message}`);
    return;
  }
  node.classList.remove('mnb-badge-warning');
  node.dataset.kind = badge.kind;
  node.dataset.name = badge.name;
  const add = (cls: string, text: string, title?: string) => {
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = text;
    if (title) {
      span.title = title;
    }
    node!.appendChild(span);
  };
  add(`mnb-badge-kind mnb-kind-${badge.kind}`, badge.kind);
  add('mnb-badge-name', badge.name);
  for (const flag of badge.flags) {
    add(`mnb-badge-flag mnb-flag-${flag.kind}`, flag.label, flag.title);
  }
  const described = badge.flags.map(f => f.title).join('; ');
  node.title = `${badge.kind} block ${badge.name}: ${described}`;
  node.setAttribute('aria-label', `${badge.kind} block ${badge.name}: ${described}`);
}

/** Keeps the badges of one notebook in sync with its cells' text. */
function watchBadges(panel: NotebookPanel, onChange: () => void): void {
  let timer = 0;
  const update = () => {
    timer = 0;
    const notebook = panel.content;
    const cells = notebook.widgets.filter(c => c.model.type === 'code');
    const badges = describeCells(cells.map(c => c.model.sharedModel.getSource()));
    cells.forEach((cell, i) => renderBadge(cell, badges[i]));
    for (const cell of notebook.widgets) {
      if (cell.model.type !== 'code') {
        renderBadge(cell, null);
      }
    }
    onChange();
  };
  const schedule = () => {
    if (!timer) {
      timer = window.setTimeout(update, 120);
    }
  };
  panel.content.modelContentChanged.connect(schedule);
  panel.content.model?.cells.changed.connect(schedule);
  panel.content.modelChanged.connect(schedule);
  void panel.context.ready.then(schedule);
  panel.disposed.connect(() => window.clearTimeout(timer));
}

// -- export dialog ---------------------------------------------------------------------------
interface ExportChoice {
  to: 'python' | 'mage';
  out_dir: string;
  force: boolean;
}

class ExportForm extends Widget {
  constructor(stem: string) {
    super();
    this.addClass('mnb-export-form');
    this.node.innerHTML = `
      <label class="mnb-field">Format
        <select class="jp-mod-styled mnb-export-format">
          <option value="python">Python folder (mage-nb run DIR)</option>
          <option value="mage">Mage project</option>
        </select>
      </label>
      <label class="mnb-field">Folder (relative to the notebook's folder)
        <input type="text" class="jp-mod-styled mnb-export-dir" spellcheck="false">
      </label>
      <label class="mnb-check"><input type="checkbox" class="mnb-export-force"> Overwrite the folder if it exists</label>`;
    this._format = this.node.querySelector('.mnb-export-format') as HTMLSelectElement;
    this._dir = this.node.querySelector('.mnb-export-dir') as HTMLInputElement;
    this._force = this.node.querySelector('.mnb-export-force') as HTMLInputElement;
    const defaultDir = () => `export/${stem}-${this._format.value}`;
    this._dir.value = defaultDir();
    let edited = false;
    this._dir.addEventListener('input', () => (edited = true));
    this._format.addEventListener('change', () => {
      if (!edited) {
        this._dir.value = defaultDir();
      }
    });
  }

  getValue(): ExportChoice {
    return { to: this._format.value as 'python' | 'mage', out_dir: this._dir.value.trim(), force: this._force.checked };
  }

  protected onAfterAttach(): void {
    this._format.focus();
  }

  private _format: HTMLSelectElement;
  private _dir: HTMLInputElement;
  private _force: HTMLInputElement;
}

// -- the plugin ------------------------------------------------------------------------------
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'mage_nb pipelines: block badges, pipeline commands and the Pipeline panel.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, palette: ICommandPalette | null) => {
    const states = new KernelStates();
    const current = (): NotebookPanel | null => tracker.currentWidget;
    const stateOf = (panel: NotebookPanel | null) => states.get(panel?.sessionContext.session?.kernel?.id);

    const pipelinePanel = new PipelinePanel({
      run: () => void app.commands.execute(CommandIDs.run),
      exportPipeline: () => void app.commands.execute(CommandIDs.export)
    });
    pipelinePanel.title.icon = pipelineIcon;
    app.shell.add(pipelinePanel, 'right', { rank: 650 });
    const refresh = () => {
      const panel = current();
      pipelinePanel.setNotebook(panel, stateOf(panel));
    };
    tracker.currentChanged.connect(refresh);
    states.changed.connect(refresh);

    tracker.widgetAdded.connect((_, panel) => {
      states.watch(panel.sessionContext);
      watchBadges(panel, () => {
        if (panel === current()) {
          refresh();
        }
      });
    });

    const enabled = () => current() !== null;

    app.commands.addCommand(CommandIDs.run, {
      label: 'Run pipeline',
      caption: 'Run every block of this notebook (%pipeline run in the kernel)',
      icon: runIcon,
      isEnabled: enabled,
      execute: async () => {
        const panel = current();
        if (!panel) {
          return;
        }
        app.shell.activateById(pipelinePanel.id);
        refresh();
        try {
          const kernel = await kernelOf(panel.sessionContext);
          await ensureExtension(kernel);
          const ok = await pipelinePanel.executeInPanel(labCode('run', { cells: blockCells(panel) }));
          if (!ok) {
            const state = stateOf(panel);
            Notification.error(
              state?.error ? `Run pipeline: ${state.error}` : 'Run pipeline failed: see the Pipeline panel',
              { autoClose: 8000 }
            );
          }
        } catch (err) {
          Notification.error(`Run pipeline: ${(err as Error).message ?? err}`, { autoClose: 8000 });
        }
      }
    });

    app.commands.addCommand(CommandIDs.dag, {
      label: 'Show DAG',
      caption: "Show this notebook's pipeline in the Pipeline panel",
      icon: pipelineIcon,
      isEnabled: enabled,
      execute: () => {
        app.shell.activateById(pipelinePanel.id);
        refresh();
      }
    });

    app.commands.addCommand(CommandIDs.export, {
      label: 'Export pipeline…',
      caption: 'Export the pipeline as a Python folder or a Mage project (%pipeline export)',
      icon: exportIcon,
      isEnabled: enabled,
      execute: async () => {
        const panel = current();
        if (!panel) {
          return;
        }
        const stem = panel.context.path.split('/').pop()!.replace(/\.ipynb$/, '');
        const result = await showDialog<ExportChoice>({
          title: 'Export pipeline',
          body: new ExportForm(stem),
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Export' })],
          focusNodeSelector: '.mnb-export-format'
        });
        if (!result.button.accept || !result.value) {
          return;
        }
        const choice = result.value;
        if (!choice.out_dir) {
          Notification.error('Export pipeline: no folder given');
          return;
        }
        const id = Notification.emit(`Exporting the pipeline to ${choice.out_dir}…`, 'in-progress', { autoClose: false });
        try {
          const kernel = await kernelOf(panel.sessionContext);
          await ensureExtension(kernel);
          const r = await executeQuietly(kernel, labCode('export', { ...choice, cells: blockCells(panel) }));
          if (r.ok) {
            const warnings = r.stderr.trim();
            const message = (r.stdout.trim().split('\n').pop() || `exported to ${choice.out_dir}`) +
              (warnings ? `\n${warnings}` : '');
            Notification.update({ id, message, type: warnings ? 'warning' : 'success', autoClose: 10000 });
          } else {
            Notification.update({
              id,
              message: `Export failed: ${r.evalue ?? r.ename ?? 'unknown error'}`,
              type: 'error',
              autoClose: false
            });
          }
        } catch (err) {
          Notification.update({ id, message: `Export failed: ${(err as Error).message ?? err}`, type: 'error', autoClose: false });
        }
      }
    });

    const category = 'Pipeline (mage_nb)';
    for (const command of [CommandIDs.run, CommandIDs.dag, CommandIDs.export]) {
      palette?.addItem({ command, category });
    }
    app.contextMenu.addItem({ type: 'separator', selector: '.jp-Notebook', rank: 90 });
    app.contextMenu.addItem({ command: CommandIDs.run, selector: '.jp-Notebook', rank: 91 });
    app.contextMenu.addItem({ command: CommandIDs.dag, selector: '.jp-Notebook', rank: 92 });
    app.contextMenu.addItem({ command: CommandIDs.export, selector: '.jp-Notebook', rank: 93 });

    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (panel: NotebookPanel) => {
        const buttons = [CommandIDs.run, CommandIDs.dag, CommandIDs.export].map(
          id => new CommandToolbarButton({ commands: app.commands, id, label: '' })
        );
        buttons.forEach((button, i) => {
          button.addClass('mnb-toolbar-button');
          panel.toolbar.insertItem(10 + i, `mage-nb-${i}`, button);
        });
        return {
          dispose: () => buttons.forEach(b => b.dispose()),
          get isDisposed() {
            return buttons[0].isDisposed;
          }
        };
      }
    });
    refresh();
  }
};

export default plugin;
