// The mage_nb run tree: an anywidget ES module (plain DOM, no build step, no dependencies).
//
// Python sends plain JSON traits: `run` (header), `blocks` (one row per block), `tree` (a
// bounded nested list of instance and item nodes), `detail` (the selected instance). This view
// redraws from them on `change:` events and never makes more than ROW_LIMIT tree rows.
// Messages sent to Python: {type: "detail", uuid}, {type: "page", node, offset}, {type: "stop"};
// the filter and the search box set the `filter` and `search` traits.

const STATUSES = ["pending", "running", "completed", "failed", "upstream_failed", "cancelled"];
const ICONS = {
  pending: "·",
  running: "▸",
  completed: "✓",
  failed: "✗",
  upstream_failed: "⊘",
  cancelled: "⊗",
};
const LABELS = {
  "": "all",
  pending: "pending",
  running: "running",
  completed: "completed",
  failed: "failed",
  upstream_failed: "upstream failed",
  cancelled: "cancelled",
};
const ROW_LIMIT = 1500;
const SEARCH_DELAY_MS = 250;

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 0.00005) return "<0.1ms";
  if (seconds < 1) return `${(seconds * 1000).toFixed(1)}ms`;
  if (seconds < 60) return `${seconds.toFixed(2)}s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m ${Math.round(seconds - minutes * 60)}s`;
}

function done(counts) {
  return STATUSES.reduce((n, s) => (s === "pending" || s === "running" ? n : n + (counts[s] || 0)), 0);
}

function progressBar(counts, total, label) {
  const bar = h("div", {
    class: "mnb-bar",
    role: "progressbar",
    "aria-label": label,
    "aria-valuemin": 0,
    "aria-valuemax": total,
    "aria-valuenow": done(counts),
  });
  for (const status of ["completed", "failed", "upstream_failed", "cancelled", "running"]) {
    const n = counts[status] || 0;
    if (!n || !total) continue;
    const seg = h("span", { class: `mnb-seg mnb-s-${status}`, title: `${n} ${status}` });
    seg.style.width = `${(100 * n) / total}%`;
    bar.append(seg);
  }
  return bar;
}

function countMarks(counts) {
  const marks = [h("span", { class: "mnb-s-completed" }, `✓${counts.completed || 0}`)];
  for (const status of ["failed", "upstream_failed", "cancelled", "running"]) {
    if (counts[status]) {
      marks.push(h("span", { class: `mnb-s-${status}` }, `${ICONS[status]}${counts[status]}`));
    }
  }
  return marks;
}

// Output comes from the user's own code, but the widget still does not run scripts or event
// handlers from it: scripts, frames, styles and on* attributes are dropped before insertion.
function sanitize(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  const root = template.content;
  for (const bad of root.querySelectorAll("script,iframe,object,embed,link,meta,base,style,form")) {
    bad.remove();
  }
  for (const node of root.querySelectorAll("*")) {
    for (const attr of Array.from(node.attributes)) {
      const name = attr.name.toLowerCase();
      const risky = /^(href|src|xlink:href|action|formaction)$/.test(name);
      if (name.startsWith("on") || (risky && /^\s*javascript:/i.test(attr.value))) {
        node.removeAttribute(attr.name);
      }
    }
  }
  return template.innerHTML;
}

function renderBundle(bundle) {
  const box = h("div", { class: "mnb-bundle" });
  const data = (bundle && bundle.data) || {};
  if (typeof data["text/html"] === "string") {
    const html = h("div", { class: "mnb-html" });
    html.innerHTML = sanitize(data["text/html"]);
    box.append(html);
  } else if (typeof data["image/png"] === "string") {
    box.append(h("img", { class: "mnb-img", alt: "output image", src: `data:image/png;base64,${data["image/png"]}` }));
  } else {
    box.append(h("pre", { class: "mnb-pre" }, String(data["text/plain"] ?? "")));
  }
  if (bundle && bundle.truncated) {
    box.append(h("div", { class: "mnb-note" }, `truncated: ${bundle.note || "too large"}`));
  }
  return box;
}

function section(title, ...content) {
  return h("div", { class: "mnb-section" }, h("div", { class: "mnb-section-title" }, title), ...content);
}

function renderDetail(detail) {
  const panel = h("div", { class: "mnb-detail", role: "region", "aria-label": `details of ${detail.uuid}` });
  const lineage = (detail.lineage || []).map(([block, suffix]) => `${block}:${suffix}`).join(" › ");
  panel.append(
    h(
      "div",
      { class: "mnb-detail-head" },
      h("span", { class: `mnb-s-${detail.status}` }, detail.status),
      h("span", { class: "mnb-muted" }, `attempts ${detail.attempts}`),
      h("span", { class: "mnb-muted" }, formatDuration(detail.duration)),
      detail.reused ? h("span", { class: "mnb-badge" }, "reused") : null,
      lineage ? h("span", { class: "mnb-muted" }, `lineage ${lineage}`) : null,
    ),
  );
  for (const note of detail.notes || []) panel.append(h("div", { class: "mnb-note" }, `truncated: ${note}`));
  if (detail.error) {
    const err = detail.error;
    panel.append(
      section(
        "Error",
        h("div", { class: "mnb-error-line" }, `${err.type}: ${err.message}`),
        err.traceback ? h("pre", { class: "mnb-pre mnb-traceback" }, err.traceback) : null,
      ),
    );
  }
  if (detail.output) panel.append(section("Output", renderBundle(detail.output)));
  if (detail.stdout) panel.append(section("stdout", h("pre", { class: "mnb-pre" }, detail.stdout)));
  if (detail.stderr) panel.append(section("stderr", h("pre", { class: "mnb-pre mnb-stderr" }, detail.stderr)));
  if ((detail.displays || []).length) {
    panel.append(section("Displays", ...detail.displays.map(renderBundle)));
  }
  return panel;
}

function render({ model, el }) {
  const collapsed = new Set();
  let receivedAt = Date.now();
  let searchTimer = null;

  const title = h("span", { class: "mnb-title" });
  const status = h("span", { class: "mnb-status" });
  const time = h("span", { class: "mnb-time" });
  const progress = h("div", { class: "mnb-progress" });
  const count = h("span", { class: "mnb-count" });
  const stop = h(
    "button",
    {
      type: "button",
      class: "mnb-button mnb-stop",
      title: "Cancel the run",
      onclick: () => {
        model.send({ type: "stop" });
        stop.disabled = true;
        stop.textContent = "Stopping…";
      },
    },
    "Stop",
  );
  const filters = h("div", { class: "mnb-filters", role: "group", "aria-label": "Filter by status" });
  const filterButtons = ["", ...STATUSES].map((value) => {
    const button = h(
      "button",
      {
        type: "button",
        class: `mnb-button mnb-filter${value ? ` mnb-f-${value}` : ""}`,
        "data-status": value,
        onclick: () => {
          model.set("filter", model.get("filter") === value ? "" : value);
          model.save_changes();
        },
      },
      value ? `${ICONS[value]} ${LABELS[value]}` : LABELS[value],
    );
    filters.append(button);
    return button;
  });
  const search = h("input", {
    class: "mnb-search",
    type: "search",
    placeholder: "search uuid…",
    "aria-label": "Search instances by uuid",
    oninput: () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        model.set("search", search.value);
        model.save_changes();
      }, SEARCH_DELAY_MS);
    },
  });
  const blocksEl = h("div", { class: "mnb-blocks", role: "table", "aria-label": "Blocks" });
  const treeEl = h("div", { class: "mnb-tree", role: "tree", "aria-label": "Instances" });
  const root = h(
    "div",
    { class: "mnb-root" },
    h("div", { class: "mnb-header" }, title, status, time, progress, count, stop),
    h("div", { class: "mnb-toolbar" }, filters, search),
    blocksEl,
    treeEl,
  );
  el.append(root);

  function elapsed() {
    const run = model.get("run") || {};
    if (run.duration === null || run.duration === undefined) return null;
    return run.status === "running" ? run.duration + (Date.now() - receivedAt) / 1000 : run.duration;
  }

  function renderHeader() {
    const run = model.get("run") || {};
    const counts = run.counts || {};
    title.textContent = run.id ? `run ${run.id}` : "run";
    status.textContent = run.status || "";
    status.className = `mnb-status mnb-s-${run.status || "pending"}`;
    time.textContent = formatDuration(elapsed());
    progress.replaceChildren(progressBar(counts, run.total || 0, "run progress"));
    const warnings = run.warnings ? ` · ${run.warnings} warning${run.warnings === 1 ? "" : "s"}` : "";
    count.textContent = `${done(counts)}/${run.total || 0}${warnings}`;
    const running = run.status === "running";
    if (!running || stop.textContent !== "Stopping…") {
      stop.disabled = !running;
      stop.textContent = "Stop";
    }
  }

  function renderControls() {
    const current = model.get("filter") || "";
    for (const button of filterButtons) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-status") === current));
    }
    const text = model.get("search") || "";
    if (search.value !== text && document.activeElement !== search) search.value = text;
  }

  function renderBlocks() {
    const rows = (model.get("blocks") || []).map((block) => {
      const name = h("span", { class: "mnb-block-name", role: "cell" }, block.name);
      name.style.paddingLeft = `${block.depth * 1.2}em`;
      const badges = [];
      if (block.dynamic) badges.push(h("span", { class: "mnb-badge", title: "dynamic: fans out" }, "⇶ dynamic"));
      if (block.reduce) badges.push(h("span", { class: "mnb-badge", title: "reduces a fan-out" }, `⇤ ${block.reduce}`));
      return h(
        "div",
        { class: "mnb-block", role: "row" },
        name,
        h("span", { class: "mnb-badges", role: "cell" }, badges),
        h("span", { class: "mnb-block-count", role: "cell" }, `${block.counts.completed || 0}/${block.total}`),
        h("span", { class: "mnb-marks", role: "cell" }, countMarks(block.counts)),
        h("span", { class: "mnb-block-bar", role: "cell" }, progressBar(block.counts, block.total, `${block.name} progress`)),
      );
    });
    blocksEl.replaceChildren(...rows);
  }

  function toggle(key) {
    if (collapsed.has(key)) collapsed.delete(key);
    else collapsed.add(key);
    renderTree();
  }

  function select(uuid) {
    const next = model.get("selected") === uuid ? "" : uuid;
    model.set("selected", next);
    model.save_changes();
    if (next) model.send({ type: "detail", uuid: next });
    renderTree();
  }

  function toggleButton(key, hasChildren, label) {
    if (!hasChildren) return h("span", { class: "mnb-toggle-space" });
    const open = !collapsed.has(key);
    return h(
      "button",
      {
        type: "button",
        class: "mnb-toggle",
        "aria-expanded": String(open),
        "aria-label": `${open ? "collapse" : "expand"} ${label}`,
        onclick: () => toggle(key),
      },
      open ? "▾" : "▸",
    );
  }

  function moreRow(node, depth) {
    const n = node.more.toLocaleString();
    const what = node.of ? ` ${node.of} items` : " matching instances";
    if (!node.id) {
      return h("div", { class: "mnb-row mnb-more-text", style: `padding-left:${depth * 1.2}em` }, `… ${n} more${what}`);
    }
    const row = h("div", { class: "mnb-row", role: "treeitem", "aria-level": depth + 1 });
    row.style.paddingLeft = `${depth * 1.2}em`;
    row.append(
      h(
        "button",
        {
          type: "button",
          class: "mnb-more",
          "data-key": `more:${node.id}`,
          title: "Show more",
          onclick: () => model.send({ type: "page", node: node.id, offset: node.shown || 0 }),
        },
        `… ${n} more${what}`,
      ),
    );
    return row;
  }

  function renderTree() {
    const focused = document.activeElement && root.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-key")
      : null;
    const selected = model.get("selected") || "";
    const detail = model.get("detail") || {};
    const rows = [];
    let hidden = 0;
    const add = (row) => {
      if (rows.length < ROW_LIMIT) rows.push(row);
      else hidden += 1;
    };

    function walk(nodes, depth, path) {
      for (const node of nodes || []) {
        if (rows.length >= ROW_LIMIT) {
          hidden += 1;
          continue;
        }
        if (node.uuid !== undefined) {
          walkInstance(node, depth, path);
        } else if (node.label) {
          const key = `item:${path}/${node.of}:${node.label}`;
          const children = node.children || [];
          const row = h("div", { class: "mnb-row mnb-item", role: "treeitem", "aria-level": depth + 1 });
          row.style.paddingLeft = `${depth * 1.2}em`;
          row.append(
            toggleButton(key, children.length > 0, `item ${node.label}`),
            h("span", { class: "mnb-item-icon" }, "◇"),
            h("span", { class: "mnb-item-label" }, node.label),
            h("span", { class: "mnb-muted" }, ` of ${node.of}`),
          );
          add(row);
          if (!collapsed.has(key)) walk(children, depth + 1, `${path}/${node.of}:${node.label}`);
          if (node.more && !collapsed.has(key)) add(moreRow(node, depth + 1));
        } else if (node.more) {
          add(moreRow(node, depth));
        }
      }
    }

    function walkInstance(node, depth, path) {
      const key = `inst:${node.uuid}`;
      const children = node.children || [];
      const isSelected = node.uuid === selected;
      const row = h("div", {
        class: `mnb-row mnb-inst${isSelected ? " mnb-selected" : ""}`,
        role: "treeitem",
        "aria-level": depth + 1,
        "aria-selected": String(isSelected),
      });
      row.style.paddingLeft = `${depth * 1.2}em`;
      const attempts = node.attempts > 1 ? h("span", { class: "mnb-attempts", title: "attempts" }, `×${node.attempts}`) : null;
      row.append(
        toggleButton(key, children.length > 0 || node.more > 0, node.uuid),
        h(
          "button",
          {
            type: "button",
            class: "mnb-inst-button",
            "data-key": key,
            title: "Show output, logs and errors",
            onclick: () => select(node.uuid),
          },
          h("span", { class: `mnb-icon mnb-s-${node.status}`, "aria-label": node.status }, ICONS[node.status] || "?"),
          h("span", { class: "mnb-uuid" }, node.uuid),
          h("span", { class: "mnb-duration" }, formatDuration(node.duration)),
          attempts,
          node.reused ? h("span", { class: "mnb-badge" }, "reused") : null,
          node.error_line ? h("span", { class: "mnb-error-line", title: node.error_line }, node.error_line) : null,
        ),
      );
      add(row);
      if (isSelected) {
        if (detail.uuid === node.uuid) add(renderDetail(detail));
        else add(h("div", { class: "mnb-detail mnb-muted" }, "loading…"));
      }
      if (collapsed.has(key)) return;
      walk(children, depth + 1, `${path}/${node.uuid}`);
      if (node.more) add(moreRow({ ...node, of: node.block }, depth + 1));
    }

    walk(model.get("tree") || [], 0, "");
    if (hidden) {
      rows.push(h("div", { class: "mnb-row mnb-more-text" }, `… ${hidden} rows not drawn (filter or search to narrow)`));
    }
    if (!rows.length) {
      const run = model.get("run") || {};
      rows.push(h("div", { class: "mnb-row mnb-muted" }, run.total ? "no instance matches" : "no instances yet"));
    }
    treeEl.replaceChildren(...rows);
    if (focused) {
      const again = Array.from(treeEl.querySelectorAll("[data-key]")).find((n) => n.getAttribute("data-key") === focused);
      if (again) again.focus();
    }
  }

  const handlers = {
    "change:run": () => {
      receivedAt = Date.now();
      renderHeader();
    },
    "change:blocks": renderBlocks,
    "change:tree": renderTree,
    "change:detail": renderTree,
    "change:selected": renderTree,
    "change:filter": renderControls,
    "change:search": renderControls,
  };
  for (const [event, handler] of Object.entries(handlers)) model.on(event, handler);
  renderHeader();
  renderControls();
  renderBlocks();
  renderTree();
  const ticker = setInterval(() => {
    if ((model.get("run") || {}).status === "running") time.textContent = formatDuration(elapsed());
  }, 500);

  return () => {
    clearInterval(ticker);
    clearTimeout(searchTimer);
    for (const [event, handler] of Object.entries(handlers)) model.off(event, handler);
  };
}

export default { render };
