// Runs run_tree.js in node against a tiny stub DOM and a fake anywidget model.
// Usage: node dom_harness.mjs MODULE.mjs STATE.json  -> prints a JSON report on stdout.
// The stub implements only what the view uses; it is enough to catch runtime errors, count
// rows and check what clicks send.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

class Text {
  constructor(text) {
    this.nodeType = 3;
    this.data = String(text);
    this.parent = null;
  }
  get textContent() {
    return this.data;
  }
}

class El {
  constructor(tag) {
    this.nodeType = 1;
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.parent = null;
    this.attrs = new Map();
    this.listeners = {};
    this.style = { setProperty: (k, v) => (this.style[k] = v) };
    this.className = "";
    this.disabled = false;
    this.value = "";
    this._html = "";
    if (tag === "template") this.content = new El("fragment");
  }
  get attributes() {
    return Array.from(this.attrs, ([name, value]) => ({ name, value }));
  }
  setAttribute(k, v) {
    this.attrs.set(k, String(v));
  }
  getAttribute(k) {
    return this.attrs.has(k) ? this.attrs.get(k) : null;
  }
  removeAttribute(k) {
    this.attrs.delete(k);
  }
  append(...nodes) {
    for (const n of nodes) {
      const node = typeof n === "string" ? new Text(n) : n;
      node.parent = this;
      this.children.push(node);
    }
  }
  appendChild(n) {
    this.append(n);
    return n;
  }
  replaceChildren(...nodes) {
    this.children = [];
    this.append(...nodes);
  }
  remove() {
    if (this.parent) this.parent.children = this.parent.children.filter((c) => c !== this);
  }
  get textContent() {
    return this.children.map((c) => c.textContent).join("");
  }
  set textContent(text) {
    this.children = [];
    this.append(new Text(text));
  }
  set innerHTML(html) {
    this._html = String(html);
    this.children = [];
  }
  get innerHTML() {
    return this._html;
  }
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }
  click() {
    for (const fn of this.listeners.click || []) fn({ target: this });
  }
  focus() {}
  contains(node) {
    for (let n = node; n; n = n.parent) if (n === this) return true;
    return false;
  }
  *walk() {
    for (const c of this.children) {
      if (c.nodeType === 1) {
        yield c;
        yield* c.walk();
      }
    }
  }
  querySelectorAll(selector) {
    if (selector === "[data-key]") return Array.from(this.walk()).filter((e) => e.attrs.has("data-key"));
    return [];
  }
  hasClass(name) {
    return this.className.split(/\s+/).includes(name);
  }
}

globalThis.document = {
  activeElement: null,
  createElement: (tag) => new El(tag),
  createTextNode: (text) => new Text(text),
};

const [modulePath, statePath] = process.argv.slice(2);
const state = JSON.parse(readFileSync(statePath, "utf8"));
const sent = [];
const listeners = {};
let saves = 0;
const model = {
  get: (k) => state[k],
  set: (k, v) => {
    const changed = state[k] !== v;
    state[k] = v;
    if (changed) for (const fn of listeners[`change:${k}`] || []) fn();
  },
  save_changes: () => {
    saves += 1;
  },
  send: (msg) => sent.push(msg),
  on: (event, fn) => (listeners[event] ||= []).push(fn),
  off: (event, fn) => {
    listeners[event] = (listeners[event] || []).filter((f) => f !== fn);
  },
};
const fire = (name, value) => {
  state[name] = value;
  for (const fn of listeners[`change:${name}`] || []) fn();
};

const widget = (await import(pathToFileURL(modulePath).href)).default;
const el = new El("div");
const cleanup = widget.render({ model, el });
const all = () => Array.from(el.walk());
const byClass = (name) => all().filter((e) => e.hasClass(name));
const report = {};
report.blockRows = byClass("mnb-block").length;
report.instanceRows = byClass("mnb-inst").length;
report.itemRows = byClass("mnb-item").length;
report.moreButtons = byClass("mnb-more").map((b) => b.textContent);
report.stopDisabled = byClass("mnb-stop")[0].disabled;
report.header = byClass("mnb-header")[0].textContent;

const firstInstance = byClass("mnb-inst-button")[0];
if (firstInstance) firstInstance.click();
const more = byClass("mnb-more")[0];
if (more) more.click();
byClass("mnb-filter").find((b) => b.getAttribute("data-status") === "failed").click();
report.filterAfterClick = state.filter;
report.pressed = byClass("mnb-filter")
  .filter((b) => b.getAttribute("aria-pressed") === "true")
  .map((b) => b.getAttribute("data-status"));

// A detail arrives for the selected instance: the panel is drawn inline.
if (state.detail_fixture) {
  fire("detail", state.detail_fixture);
  report.detailPanels = byClass("mnb-detail").length;
  report.detailText = byClass("mnb-detail")[0]?.textContent ?? "";
  report.htmlBoxes = byClass("mnb-html").map((b) => b.innerHTML);
}
// A running run enables Stop; clicking it sends {type: "stop"}.
fire("run", { ...state.run, status: "running" });
const stop = byClass("mnb-stop")[0];
report.stopEnabledWhenRunning = !stop.disabled;
stop.click();
report.sent = sent;
report.saves = saves;
// Redraw under a big tree never makes more than the row limit.
const big = [];
for (let i = 0; i < 5000; i++) {
  big.push({ uuid: `t:${i}`, block: "t", status: "completed", duration: 0.001, attempts: 1, reused: false, error_line: null });
}
fire("tree", big);
report.rowsForBigTree = byClass("mnb-row").length;
cleanup();
report.listenersLeft = Object.values(listeners).reduce((n, fns) => n + fns.length, 0);
console.log(JSON.stringify(report));
