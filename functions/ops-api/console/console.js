// The printworks back office: one page over the operator API
// (/v1/ops/...), on the same origin. No library, no build step.
//
// - The operator key is kept in sessionStorage (gone with the tab) and
//   sent as `Authorization: Bearer` on every call; never in a cookie, a URL
//   or a log.
// - Every action asks for a reason (or a note) and a confirmation, and is
//   sent with an Idempotency-Key made when its dialog opens: sending it
//   again (a retry, a double click) does it once.
// - Pages are built with DOM calls only (text is never parsed as HTML).
// - Live: GET /v1/ops/live read with fetch (server-sent events); where the
//   API has no stream (501) the page polls every 5 seconds (the pages
//   that follow events: needs a person, an order, the plants).

const KEY = "printworks-operator-key";
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
const liveBadge = document.getElementById("live");
const POLL_MS = 5000;

// ---- small helpers ---------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(message, isError = false) {
  statusLine.textContent = message;
  statusLine.classList.toggle("error", isError);
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function money(minor, currency) {
  return `${(minor / 100).toFixed(2)} ${currency}`;
}

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "empty", text: empty });
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", class: h.num ? "num" : null, text: h.label ?? h })))),
    el("tbody", {}, rows),
  );
}

// ---- the API -------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, body) {
    const error = body && body.error ? body.error : { code: "error", message: `HTTP ${status}` };
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = error.details;
  }
}

function key() {
  return sessionStorage.getItem(KEY);
}

async function api(method, path, body, idempotencyKey, { loggingIn = false } = {}) {
  const headers = { Authorization: `Bearer ${key()}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401 && !loggingIn) {
    logout("Your key was not accepted: log in again.");
    throw new ApiFailure(401, data);
  }
  if (!response.ok) throw new ApiFailure(response.status, data);
  return data;
}

/// Calls that may fail for a reason of the operator's role or an empty
/// feature: the failure is shown in place of the section.
async function attempt(promise) {
  try {
    return { ok: await promise };
  } catch (e) {
    if (e instanceof ApiFailure) return { error: e };
    throw e;
  }
}

// ---- the action dialog -----------------------------------------------------

const dialog = document.getElementById("dialog");
const dialogForm = document.getElementById("dialog-form");
const dialogFields = document.getElementById("dialog-fields");
const dialogError = document.getElementById("dialog-error");
let dialogRun = null;

document.getElementById("dialog-cancel").addEventListener("click", () => dialog.close());

dialogForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!dialogRun) return;
  const confirm = document.getElementById("dialog-confirm");
  confirm.disabled = true;
  dialogError.textContent = "";
  try {
    const message = await dialogRun(new FormData(dialogForm));
    dialog.close();
    say(message);
    await render();
  } catch (e) {
    if (!(e instanceof ApiFailure) && !(e instanceof TypeError) && !e.userFacing) throw e;
    const allowed = e.details && (e.details.allowed_actions || e.details.role_allows);
    dialogError.textContent = allowed ? `${e.message} (allowed now: ${allowed.join(", ")})` : e.message;
  } finally {
    confirm.disabled = false;
  }
});

function reasonField(name, label) {
  return [
    el("label", { for: `f-${name}`, text: label }),
    el("textarea", { id: `f-${name}`, name, required: true, maxlength: 500 }),
  ];
}

/// Opens the dialog for one action: `fields` are the inputs, `run` sends
/// it (with the Idempotency-Key made now, kept for every retry of this
/// dialog) and returns what to tell the operator.
function ask({ title, text, fields, confirm, danger, run }) {
  const idempotencyKey = crypto.randomUUID();
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-text").textContent = text;
  dialogFields.replaceChildren(...fields);
  dialogError.textContent = "";
  const button = document.getElementById("dialog-confirm");
  button.textContent = confirm;
  button.classList.toggle("danger", !!danger);
  button.classList.toggle("primary", !danger);
  dialogRun = (data) => run(data, idempotencyKey);
  dialog.showModal();
  const first = dialogFields.querySelector("textarea, input, select");
  (first || button).focus();
}

function required(value, what) {
  const text = (value || "").toString().trim();
  if (!text) {
    const e = new Error(`${what} is required`);
    e.userFacing = true;
    throw e;
  }
  return text;
}

function actOn(orderId, action, view) {
  const path = `/v1/ops/orders/${encodeURIComponent(orderId)}/${action}`;
  const done = (answer) => `Order ${orderId}: ${action} done (now ${answer.order ? answer.order.state : "changed"}).`;
  if (action === "release") {
    ask({
      title: `Release ${orderId}`,
      text: "Production goes on from where the order was held. Say why; the plant is optional (another plant than before).",
      fields: [...reasonField("reason", "Reason"), el("label", { for: "f-plant", text: "Plant (optional)" }), el("input", { id: "f-plant", name: "plant", maxlength: 40 })],
      confirm: "Release",
      run: async (data, k) => {
        const body = { reason: required(data.get("reason"), "A reason") };
        const plant = (data.get("plant") || "").toString().trim();
        if (plant) body.plant = plant;
        return done(await api("POST", path, body, k));
      },
    });
  } else if (action === "cancel") {
    ask({
      title: `Cancel ${orderId}`,
      text: "The order is cancelled and its unfinished jobs stopped. This cannot be undone.",
      fields: reasonField("reason", "Reason"),
      confirm: "Cancel the order",
      danger: true,
      run: async (data, k) => done(await api("POST", path, { reason: required(data.get("reason"), "A reason") }, k)),
    });
  } else if (action === "reprint") {
    const jobs = currentJobs(view);
    ask({
      title: `Reprint jobs of ${orderId}`,
      text: "The chosen jobs are made again (new job ids) and shipped again.",
      fields: [
        el("fieldset", {}, el("legend", { text: "Jobs" }), jobs.map((j, i) =>
          el("label", { class: "check" }, el("input", { type: "checkbox", name: "jobs", value: j.job_id, id: `f-job-${i}` }), ` ${j.job_id} (${j.status || "waiting"})`))),
        ...reasonField("reason", "Reason"),
      ],
      confirm: "Reprint",
      run: async (data, k) => {
        const chosen = data.getAll("jobs").map(String);
        if (!chosen.length) {
          const e = new Error("Choose at least one job");
          e.userFacing = true;
          throw e;
        }
        return done(await api("POST", path, { jobs: chosen, reason: required(data.get("reason"), "A reason") }, k));
      },
    });
  }
}

function resolveFlag(orderId, flag) {
  ask({
    title: `Resolve flag ${flag.flag} of ${orderId}`,
    text: `${flag.code}: ${flag.message}. Say what was done about it.`,
    fields: reasonField("note", "Note"),
    confirm: "Resolve",
    run: async (data, k) => {
      await api("POST", `/v1/ops/orders/${encodeURIComponent(orderId)}/resolve`, { flag: flag.flag, note: required(data.get("note"), "A note") }, k);
      return `Flag ${flag.flag} of ${orderId} resolved.`;
    },
  });
}

function redrive(queue) {
  ask({
    title: `Redrive ${queue.queue}`,
    text: `The ${queue.depth} dead letters of ${queue.queue} go back to their queue and are handled again. Every consumer is idempotent: work already done changes nothing.`,
    fields: [],
    confirm: "Redrive",
    run: async (_data, k) => {
      const answer = await api("POST", `/v1/ops/dlq/${encodeURIComponent(queue.queue)}/redrive`, {}, k);
      const r = answer.redrive || {};
      const how = r.moved !== undefined ? `${r.moved} moved back` : r.task ? `move task ${r.task}` : "nothing to move";
      return `${queue.queue}: redriven (${how}).`;
    },
  });
}

function currentJobs(view) {
  const attempts = (view && view.attempts) || [];
  return attempts.flatMap((a) => a.jobs).filter((j) => j.current);
}

function actionButtons(orderId, actions, view) {
  return actions
    .filter((a) => ["release", "reprint", "cancel"].includes(a))
    .filter((a) => a !== "reprint" || view)
    .map((a) =>
      el("button", { type: "button", class: a === "cancel" ? "danger" : null, onclick: () => actOn(orderId, a, view), "data-action": a, "data-order": orderId }, a[0].toUpperCase() + a.slice(1)),
    );
}

function orderLink(id) {
  return el("a", { href: `#/order/${encodeURIComponent(id)}`, text: id });
}

// ---- pages ---------------------------------------------------------------------

function loginPage() {
  const input = el("input", { id: "key", type: "password", name: "key", autocomplete: "off", required: true, "aria-describedby": "key-help" });
  const error = el("p", { class: "error", role: "alert" });
  const form = el(
    "form",
    {
      class: "login",
      onsubmit: async (event) => {
        event.preventDefault();
        sessionStorage.setItem(KEY, input.value.trim());
        try {
          await api("GET", "/v1/ops/holds", undefined, undefined, { loggingIn: true });
        } catch (e) {
          sessionStorage.removeItem(KEY);
          error.textContent = e.status === 401 ? "That key was not accepted." : e.message;
          return;
        }
        location.hash = "#/needs";
        await refresh();
        startLive();
      },
    },
    el("h1", { text: "Log in" }),
    el("label", { for: "key", text: "Operator key" }),
    input,
    el("p", { id: "key-help", class: "empty", text: "printworks operator add prints it once. It stays in this tab only." }),
    error,
    el("button", { type: "submit", class: "primary", text: "Log in" }),
  );
  main.replaceChildren(form);
  input.focus();
}

async function needsPage() {
  const [holds, flags, stuck, dlq] = await Promise.all([
    attempt(api("GET", "/v1/ops/holds")),
    attempt(api("GET", "/v1/ops/flags")),
    attempt(api("GET", "/v1/ops/stuck")),
    attempt(api("GET", "/v1/ops/dlq")),
  ]);
  const failed = (r) => el("p", { class: "empty", text: r.error.message });
  const held = holds.ok
    ? table(
        ["Order", "Tenant", "Why", "Held since", "Actions"],
        holds.ok.orders.map((o) =>
          el("tr", { "data-order": o.order_id },
            el("td", {}, orderLink(o.order_id)),
            el("td", { text: o.tenant }),
            el("td", {}, el("span", { class: "badge", text: o.code || "hold" }), " ", o.reason, o.customer_can_fix ? " (the customer can replace the photo)" : ""),
            el("td", { text: when(o.since) }),
            el("td", {}, actionButtons(o.order_id, o.actions, null), el("a", { href: `#/order/${encodeURIComponent(o.order_id)}`, class: "button", text: "Open" })),
          )),
        "No order is on hold.",
      )
    : failed(holds);
  const payments = flags.ok
    ? table(
        ["Order", "Tenant", "Flag", "Raised", "Actions"],
        flags.ok.orders.flatMap((o) => [
          ...o.flags.map((f) =>
            el("tr", { "data-order": o.order_id },
              el("td", {}, orderLink(o.order_id)),
              el("td", { text: o.tenant }),
              el("td", {}, el("span", { class: "badge", text: f.code }), " ", f.message),
              el("td", { text: when(f.at) }),
              el("td", {}, el("button", { type: "button", onclick: () => resolveFlag(o.order_id, f), "data-action": "resolve", "data-order": o.order_id }, `Resolve flag ${f.flag}`)),
            )),
          ...o.refund_requests.map((r) =>
            el("tr", { "data-order": o.order_id },
              el("td", {}, orderLink(o.order_id)),
              el("td", { text: o.tenant }),
              el("td", {}, el("span", { class: "badge", text: "refund request" }), ` ${money(r.amount, o.currency)} (${r.reason}${r.payment_id ? `, payment ${r.payment_id}` : ""}): refund it at the provider`),
              el("td", { text: when(r.raised_at) }),
              el("td", {}, el("a", { href: `#/order/${encodeURIComponent(o.order_id)}`, class: "button", text: "Open" })),
            )),
        ]),
        "No payment needs a person.",
      )
    : failed(flags);
  const stuckTable = stuck.ok
    ? table(
        ["Order", "State", "Plant", "Since", "Handed over", "Actions"],
        stuck.ok.orders.map((o) =>
          el("tr", { "data-order": o.order_id },
            el("td", {}, orderLink(o.order_id)),
            el("td", {}, el("span", { class: `badge ${o.state}`, text: o.state })),
            el("td", { text: o.plant || "" }),
            el("td", { text: when(o.since) }),
            el("td", { class: "num", text: o.nudges }),
            el("td", {}, actionButtons(o.order_id, o.actions, null), el("a", { href: `#/order/${encodeURIComponent(o.order_id)}`, class: "button", text: "Open" })),
          )),
        "Nothing is stuck.",
      )
    : failed(stuck);
  const letters = dlq.ok
    ? table(
        ["Queue", { label: "Dead letters", num: true }, "Dead-letter queue", "Actions"],
        dlq.ok.queues.map((q) =>
          el("tr", { "data-queue": q.queue },
            el("td", { text: q.queue }),
            el("td", { class: "num", text: q.depth }),
            el("td", { text: q.dead_letter_queue || "" }),
            el("td", {}, q.depth > 0 ? el("button", { type: "button", onclick: () => redrive(q), "data-action": "redrive", "data-queue": q.queue }, "Redrive") : ""),
          )),
        "No queue has a dead-letter queue here.",
      )
    : failed(dlq);
  main.replaceChildren(
    el("h1", { text: "Needs a person" }),
    el("section", { id: "held", "aria-labelledby": "h-held" }, el("h2", { id: "h-held", text: "Held orders" }), held),
    el("section", { id: "flags", "aria-labelledby": "h-flags" }, el("h2", { id: "h-flags", text: "Payments: flags and refund requests" }), payments),
    el("section", { id: "stuck", "aria-labelledby": "h-stuck" }, el("h2", { id: "h-stuck", text: "Stuck orders" }), stuckTable),
    el("section", { id: "dead-letters", "aria-labelledby": "h-dlq" }, el("h2", { id: "h-dlq", text: "Dead letters" }), letters),
  );
}

async function orderPage(id) {
  const view = await api("GET", `/v1/ops/orders/${encodeURIComponent(id)}`);
  const order = view.order;
  const ledger = view.payments.status || {};
  const flags = (ledger.flags || []).map((f, i) => ({ ...f, flag: i + 1 })).filter((f) => !f.resolved);
  const dl = (pairs) => el("dl", { class: "grid" }, pairs.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  main.replaceChildren(
    el("h1", {}, `Order ${order.id} `, el("span", { id: "order-state", class: `badge ${order.state}`, text: order.state })),
    el("section", { "aria-label": "Summary" },
      dl([
        ["Tenant", order.tenant],
        ["Reference", order.reference || ""],
        ["Placed", when(order.created_at)],
        ["Last change", when(order.updated_at)],
        ["Attempt", String(order.attempt)],
        ["Total", money(order.totals.total.amount, order.totals.total.currency)],
        ["Ship to", `${order.shipping.address.city}, ${order.shipping.address.country}`],
        ["Held because", order.hold ? order.hold.reason : ""],
      ]),
      el("div", { class: "buttons", id: "order-actions" },
        actionButtons(order.id, view.allowed_actions, view),
        flags.map((f) => el("button", { type: "button", onclick: () => resolveFlag(order.id, f), "data-action": "resolve" }, `Resolve flag ${f.flag}`))),
    ),
    el("section", { "aria-labelledby": "h-items" }, el("h2", { id: "h-items", text: "Items" }),
      table(["Line", "Product", "Quantity", "Images", "Print files"], order.items.map((i) =>
        el("tr", {},
          el("td", { class: "num", text: i.line }),
          el("td", { text: `${i.name} (${i.sku})` }),
          el("td", { class: "num", text: i.quantity }),
          el("td", { class: "num", text: i.images.length }),
          el("td", { text: (i.renders || []).map((r) => `${r.preview.width}×${r.preview.height} preview, ${r.effective_dpi} dpi`).join("; ") || "not rendered yet" }),
        )), "No items.")),
    el("section", { id: "previews", "aria-labelledby": "h-previews" }, el("h2", { id: "h-previews", text: "Print files" }),
      (view.previews || []).length
        ? el("div", { class: "previews" }, view.previews.map((p) =>
            el("figure", { class: "preview" },
              el("img", { src: p.url, alt: `Preview of line ${p.line}, image ${p.image} (${p.sku})`, width: p.width, height: p.height, loading: "lazy" }),
              el("figcaption", { text: `Line ${p.line}, image ${p.image}: ${p.sku}, print ${p.print.width}×${p.print.height} px at ${p.effective_dpi} dpi` }))))
        : el("p", { class: "empty", text: "No print file yet: the order is not rendered." })),
    el("section", { "aria-labelledby": "h-jobs" }, el("h2", { id: "h-jobs", text: "Jobs" }),
      table(["Attempt", "Job", "Plant", "Status", "Carrier", "Tracking", "Current"], view.attempts.flatMap((a) => a.jobs.map((j) =>
        el("tr", { "data-job": j.job_id },
          el("td", { class: "num", text: a.attempt }),
          el("td", { text: j.job_id }),
          el("td", { text: j.plant || "" }),
          el("td", {}, el("span", { class: `badge ${j.status || ""}`, text: j.status || "waiting" })),
          el("td", { text: j.carrier || "" }),
          el("td", { text: j.tracking || "" }),
          el("td", { text: j.current ? "yes" : "superseded" }),
        ))), "Not dispatched yet.")),
    el("section", { "aria-labelledby": "h-timeline" }, el("h2", { id: "h-timeline", text: "Timeline" }),
      table(["When", "What", "Detail"], view.timeline.map((t) =>
        el("tr", {},
          el("td", { text: when(t.at) }),
          el("td", { text: t.event }),
          el("td", { text: [t.operator && `by ${t.operator}`, t.plant && `plant ${t.plant}`, t.job_id, typeof t.detail === "string" ? t.detail : t.detail ? JSON.stringify(t.detail) : ""].filter(Boolean).join(" · ") }),
        )), "Nothing yet.")),
    el("section", { "aria-labelledby": "h-payments" }, el("h2", { id: "h-payments", text: "Payments" }),
      dl([
        ["Set up", view.payments.setup.method === "invoice" ? "invoice (paid on placement)" : `${view.payments.setup.provider}`],
        ["Captured", ledger.captured !== undefined ? money(ledger.captured, order.currency) : "—"],
        ["Refunded", ledger.refunded !== undefined ? money(ledger.refunded, order.currency) : "—"],
        ["Open flags", String(flags.length)],
      ]),
      table(["Flag", "Code", "Message", "Raised", "Resolved"], (ledger.flags || []).map((f, i) =>
        el("tr", {},
          el("td", { class: "num", text: i + 1 }),
          el("td", { text: f.code }),
          el("td", { text: f.message }),
          el("td", { text: when(f.at) }),
          el("td", { text: f.resolved ? `${f.resolved.operator}: ${f.resolved.note}` : "open" }),
        )), "No payment flags.")),
    view.notifications === undefined ? "" : el("section", { id: "notifications", "aria-labelledby": "h-notifications" }, el("h2", { id: "h-notifications", text: "Notifications" }),
      view.notifications === null
        ? el("p", { class: "empty", text: "The notification ledger is not reachable here." })
        : table(["When", "Channel", "Event", "Status", "Subject", "Attempts"], view.notifications.map((n) =>
            el("tr", { "data-channel": n.channel },
              el("td", { text: when(n.at) }),
              el("td", { text: n.channel }),
              el("td", { text: n.event }),
              el("td", {}, el("span", { class: `badge ${n.status}`, text: n.status }), n.detail ? ` ${n.detail}` : ""),
              el("td", { text: n.subject || "" }),
              el("td", { class: "num", text: n.attempts }),
            )), "Nothing sent for this order yet.")),
    el("section", { "aria-labelledby": "h-actions" }, el("h2", { id: "h-actions", text: "Operator actions" }),
      table(["When", "Operator", "Action", "Reason"], view.actions.map((a) =>
        el("tr", {},
          el("td", { text: when(a.at) }),
          el("td", { text: a.operator }),
          el("td", { text: a.action }),
          el("td", { text: a.reason }),
        )), "No operator has acted on this order.")),
  );
}

// ---- search ---------------------------------------------------------------------

// The criteria stay in memory, never in the address: an e-mail address
// must not end up in a URL, a history or a log.
let criteria = {};
let pages = [];

const STATES = ["placed", "paid", "rendered", "dispatched", "in_production", "printed", "packed", "shipped", "on_hold", "cancelled"];

async function searchPage() {
  const field = (name, label, type = "text") =>
    el("div", {}, el("label", { for: `q-${name}`, text: label }), el("input", { id: `q-${name}`, name, type, value: criteria[name] || "", autocomplete: "off" }));
  const state = el("select", { id: "q-state", name: "state" }, el("option", { value: "", text: "any" }), STATES.map((s) => el("option", { value: s, selected: criteria.state === s, text: s })));
  const form = el("form", {
    class: "filters",
    role: "search",
    onsubmit: (event) => {
      event.preventDefault();
      criteria = {};
      for (const [k, v] of new FormData(event.target)) if (String(v).trim()) criteria[k] = String(v).trim();
      pages = [];
      refresh();
    },
  },
  field("order_id", "Order id"), field("reference", "Reference"), field("email", "Customer e-mail", "email"), field("tracking", "Tracking number"),
  field("tenant", "Tenant"), el("div", {}, el("label", { for: "q-state", text: "State" }), state), field("from", "Placed from", "date"), field("to", "to", "date"),
  el("button", { type: "submit", class: "primary", text: "Search" }));
  const cursor = pages[pages.length - 1];
  const found = await attempt(api("POST", "/v1/ops/search", { ...criteria, ...(cursor ? { cursor } : {}) }));
  const results = found.error
    ? el("p", { class: "error", text: found.error.message })
    : table(["Order", "Tenant", "Reference", "State", "Placed", "Total", "Plant", "Tracking"], found.ok.orders.map((o) =>
        el("tr", { "data-order": o.order_id },
          el("td", {}, orderLink(o.order_id)),
          el("td", { text: o.tenant }),
          el("td", { text: o.reference || "" }),
          el("td", {}, el("span", { class: `badge ${o.state}`, text: o.state })),
          el("td", { text: when(o.created_at) }),
          el("td", { class: "num", text: money(o.total.amount, o.total.currency) }),
          el("td", { text: o.plant || "" }),
          el("td", { text: o.tracking.join(", ") }),
        )), "No order matches.");
  const paging = el("div", { class: "buttons" },
    pages.length ? el("button", { type: "button", onclick: () => { pages.pop(); refresh(); }, text: "Previous page" }) : "",
    found.ok && found.ok.next ? el("button", { type: "button", id: "next-page", onclick: () => { pages.push(found.ok.next); refresh(); }, text: "Next page" }) : "");
  main.replaceChildren(
    el("h1", { text: "Search" }),
    el("section", {}, form),
    el("section", { id: "results", "aria-label": "Results" }, el("p", { class: "empty", text: `Newest first, ${found.ok ? found.ok.orders.length : 0} on this page.` }), results, paging),
  );
}

// ---- statistics ---------------------------------------------------------------

const CSV = {
  revenue: ["day", "tenant", "currency", "orders", "net", "vat", "gross", "refunded", "average_order_value"],
  lead_times: ["plant", "sku", "orders", "p50_minutes", "p95_minutes"],
  holds: ["day", "tenant", "code", "holds"],
  notifications: ["day", "tenant", "channel", "sent", "deferred", "cap"],
};

function csvOf(section, lines) {
  const columns = CSV[section];
  const cell = (v) => {
    const text = String(v ?? "");
    return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  return [columns.join(","), ...lines.map((l) => columns.map((c) => cell(l[c])).join(","))].join("\n") + "\n";
}

function downloadButton(section, lines, name) {
  return el("button", {
    type: "button",
    "data-csv": section,
    onclick: () => {
      const blob = new Blob([csvOf(section, lines)], { type: "text/csv" });
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    },
  }, "Download CSV");
}

/// A bar chart: `bars` are {label, a, b?}; `a` (and `b` beside it) scaled
/// to the largest value; labels under the bars.
function barChart(title, bars, legend, format = String) {
  const width = 900;
  const upright = bars.length <= 12;
  const height = upright ? 220 : 250;
  const left = 48;
  const bottom = upright ? 28 : 64;
  const max = Math.max(1, ...bars.flatMap((b) => [b.a, b.b ?? 0]));
  const slot = (width - left) / Math.max(1, bars.length);
  const barWidth = Math.max(2, Math.min(40, slot * (bars.some((b) => b.b !== undefined) ? 0.4 : 0.7)));
  const y = (v) => height - bottom - (v / max) * (height - bottom - 16);
  const nodes = [
    svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
    svg("text", { x: 4, y: 14 }, format(max)),
    svg("text", { x: 4, y: height - bottom }, "0"),
  ];
  bars.forEach((b, i) => {
    const x = left + i * slot + (slot - barWidth * (b.b !== undefined ? 2 : 1)) / 2;
    nodes.push(svg("rect", { class: "bar-a", x, y: y(b.a), width: barWidth, height: height - bottom - y(b.a) }, svg("title", {}, `${b.label}: ${format(b.a)}`)));
    if (b.b !== undefined) {
      nodes.push(svg("rect", { class: "bar-b", x: x + barWidth, y: y(b.b), width: barWidth, height: height - bottom - y(b.b) }, svg("title", {}, `${b.label}: ${format(b.b)}`)));
    }
    const middle = left + i * slot + slot / 2;
    if (upright) {
      nodes.push(svg("text", { x: middle, y: height - bottom + 16, "text-anchor": "middle" }, b.label));
      // The values themselves, so a bar of 0 still says so.
      const value = b.b !== undefined ? `${format(b.a)} / ${format(b.b)}` : format(b.a);
      nodes.push(svg("text", { x: middle, y: Math.min(y(b.a), y(b.b ?? b.a)) - 4, "text-anchor": "middle", class: "value" }, value));
    } else if (i % Math.ceil(bars.length / 40) === 0) {
      nodes.push(svg("text", { x: middle, y: height - bottom + 12, "text-anchor": "end", transform: `rotate(-40 ${middle} ${height - bottom + 12})` }, b.label));
    }
  });
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title }, svg("title", {}, title), nodes);
}

async function statsPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const query = new URLSearchParams();
  for (const name of ["from", "to", "tenant"]) if (params.get(name)) query.set(name, params.get(name));
  const report = await api("GET", `/v1/ops/stats?${query}`);
  const byDay = new Map();
  for (const line of report.revenue) {
    const day = byDay.get(line.day) || { orders: 0, net: {} };
    day.orders += line.orders;
    day.net[line.currency] = (day.net[line.currency] || 0) + line.net;
    byDay.set(line.day, day);
  }
  const days = [...byDay.keys()].sort();
  const currencies = [...new Set(report.revenue.map((l) => l.currency))].sort();
  const holdsByCode = new Map();
  for (const h of report.holds) holdsByCode.set(h.code, (holdsByCode.get(h.code) || 0) + h.holds);
  const field = (name, label, type, value) => el("div", {}, el("label", { for: `s-${name}`, text: label }), el("input", { id: `s-${name}`, name, type, value: value || "" }));
  const filters = el("form", {
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      const next = new URLSearchParams();
      for (const [k, v] of data) if (String(v).trim()) next.set(k, String(v).trim());
      location.hash = `#/stats?${next}`;
    },
  }, field("from", "From", "date", report.from), field("to", "To", "date", report.to), field("tenant", "Tenant", "text", params.get("tenant")), el("button", { type: "submit", class: "primary", text: "Show" }));
  const figure = (id, title, chart, section, lines, name, legend) =>
    el("section", { id }, el("figure", {}, el("figcaption", {}, el("span", { text: title }), downloadButton(section, lines, name)), legend || "", chart));
  main.replaceChildren(
    el("h1", { text: "Statistics" }),
    el("section", {}, filters, el("p", { class: "empty", text: `Days are UTC, ${report.from} to ${report.to}. Money in ${currencies.join(" and ") || "no currency yet"}, net of VAT.` })),
    figure("chart-orders", "Orders paid per day", barChart("Orders paid per day", days.map((d) => ({ label: d.slice(5), a: byDay.get(d).orders }))), "revenue", report.revenue, "revenue.csv"),
    ...currencies.map((c) =>
      figure(`chart-revenue-${c}`, `Net revenue per day (${c})`, barChart(`Net revenue per day (${c})`, days.map((d) => ({ label: d.slice(5), a: byDay.get(d).net[c] || 0 })), null, (v) => (v / 100).toFixed(0)), "revenue", report.revenue, `revenue-${c}.csv`)),
    figure("chart-lead", "Lead time from placement to shipment (minutes)", barChart("Lead time p50 and p95 per plant and product", report.lead_times.map((l) => ({ label: `${l.plant} ${l.sku}`, a: l.p50_minutes, b: l.p95_minutes }))), "lead_times", report.lead_times, "lead-times.csv",
      el("p", { class: "legend" }, el("span", { class: "a", text: "p50" }), " ", el("span", { class: "b", text: "p95" }))),
    figure("chart-holds", "Holds by reason", barChart("Holds by reason", [...holdsByCode.entries()].map(([code, n]) => ({ label: code, a: n }))), "holds", report.holds, "holds.csv"),
    ...(report.notifications.length || !params.get("tenant") ? [notificationsFigure(report, figure)] : []),
  );
}

/// Notifications against the daily caps: per tenant and channel, the
/// busiest day's sends beside the cap, and what the cap deferred.
function notificationsFigure(report, figure) {
  const pairs = new Map();
  for (const n of report.notifications) {
    const k = `${n.tenant} ${n.channel}`;
    const p = pairs.get(k) || { label: k, peak: 0, cap: n.cap, sent: 0, deferred: 0 };
    p.peak = Math.max(p.peak, n.sent);
    p.cap = n.cap;
    p.sent += n.sent;
    p.deferred += n.deferred;
    pairs.set(k, p);
  }
  const lines = [...pairs.values()].sort((a, b) => a.label.localeCompare(b.label));
  const title = "Notifications: the busiest day's sends against the daily cap";
  return figure("chart-notifications", title, barChart(title, lines.map((p) => ({ label: p.label, a: p.peak, b: p.cap }))), "notifications", report.notifications, "notifications.csv",
    el("div", {},
      el("p", { class: "legend" }, el("span", { class: "a", text: "busiest day" }), " ", el("span", { class: "b", text: "daily cap" })),
      table(["Tenant and channel", { label: "Sent in the range", num: true }, { label: "Deferred by the cap", num: true }, { label: "Cap per day", num: true }], lines.map((p) =>
        el("tr", {}, el("td", { text: p.label }), el("td", { class: "num", text: p.sent }), el("td", { class: "num", text: p.deferred }), el("td", { class: "num", text: p.cap }))),
        "Nothing was sent in these days.")));
}

// ---- plants ---------------------------------------------------------------------

function age(minutes) {
  if (minutes === null || minutes === undefined) return "never";
  if (minutes < 60) return `${minutes} min`;
  if (minutes < 48 * 60) return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  return `${Math.floor(minutes / 1440)} days`;
}

async function plantsPage() {
  const board = await api("GET", "/v1/ops/plants");
  const columns = ["sent", "accepted", "printing", "printed", "packed"];
  main.replaceChildren(
    el("h1", { text: "Plants" }),
    el("p", { class: "empty", text: `As of ${when(board.at)}; shipped today counts the UTC day ${board.day}.${board.complete ? "" : " Not every order with open jobs was read: the counts are a lower bound."}` }),
    table(["Plant", { label: "Open jobs", num: true }, ...columns.map((c) => ({ label: c, num: true })), "Oldest open job", "Agent last reported", { label: "Shipped today", num: true }],
      board.plants.map((p) =>
        el("tr", { "data-plant": p.plant },
          el("td", { text: p.name ? `${p.plant} (${p.name})` : p.plant }),
          el("td", { class: "num", text: p.open_jobs }),
          ...columns.map((c) => el("td", { class: "num", "data-state": c, text: p.by_state[c] })),
          el("td", {}, p.oldest_job ? [orderLink(p.oldest_job.order_id), ` ${p.oldest_job.state}, ${age(p.oldest_job.age_minutes)} old`] : "none"),
          el("td", { class: p.last_report_minutes_ago === null || p.last_report_minutes_ago > 60 ? "warn" : "", text: p.last_report_at ? `${when(p.last_report_at)} (${age(p.last_report_minutes_ago)} ago)` : "never" }),
          el("td", { class: "num", text: p.shipped_today }),
        )), "No plant."),
    ...board.plants.map((p) =>
      el("section", { "aria-labelledby": `h-plant-${p.plant}` }, el("h2", { id: `h-plant-${p.plant}`, text: `${p.plant}: the oldest open jobs` }),
        table(["Order", "Job", "State", "Order state", "Sent", "Age"], p.oldest.map((j) =>
          el("tr", { "data-job": j.job_id },
            el("td", {}, orderLink(j.order_id)),
            el("td", { text: j.job_id }),
            el("td", {}, el("span", { class: `badge ${j.state}`, text: j.state })),
            el("td", { text: j.order_state }),
            el("td", { text: when(j.since) }),
            el("td", { text: age(j.age_minutes) }),
          )), "No open job."))),
  );
}

// ---- routing and live updates ---------------------------------------------------

let rendering = Promise.resolve();
function route() {
  const hash = location.hash || "#/needs";
  const [path] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  return { page: parts[0] || "needs", id: parts[1] ? decodeURIComponent(parts[1]) : null };
}

async function render() {
  const signedIn = !!key();
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("logout").hidden = !signedIn;
  liveBadge.hidden = !signedIn;
  if (!signedIn) return loginPage();
  const { page, id } = route();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (page === "order" && id) await orderPage(id);
    else if (page === "stats") await statsPage();
    else if (page === "search") await searchPage();
    else if (page === "plants") await plantsPage();
    else await needsPage();
  } catch (e) {
    if (!(e instanceof ApiFailure)) throw e;
    main.replaceChildren(el("h1", { text: "Could not load this page" }), el("p", { class: "error", text: e.message }));
  }
}

function refresh() {
  rendering = rendering.then(render, render);
  return rendering;
}

/// What an event means for the page on screen: the needs-a-person list
/// changes with any order; an order page with its own.
let pending = null;
function onEvent(event) {
  const { page, id } = route();
  if (page === "stats" || page === "search" || dialog.open) return;
  if (page === "order" && event.order_id !== id) return;
  clearTimeout(pending);
  pending = setTimeout(refresh, 150);
}

let liveController = null;
let pollTimer = null;
/// The pages that follow what happens (the others show what was asked).
const LIVE_PAGES = ["needs", "order", "plants"];
/// A plant's job reports that move no order publish no event: while the
/// stream is up, the plants page also reads itself again this often.
const PLANTS_MS = 10000;
setInterval(() => {
  if (liveBadge.textContent === "live" && route().page === "plants" && !dialog.open) refresh();
}, PLANTS_MS);
function setLive(mode) {
  liveBadge.classList.toggle("on", mode !== "off");
  liveBadge.classList.toggle("off", mode === "off");
  liveBadge.textContent = mode === "stream" ? "live" : mode === "poll" ? "live (polling every 5 s)" : "reconnecting";
}

async function startLive() {
  if (liveController || !key()) return;
  liveController = new AbortController();
  let lastId = null;
  while (key() && liveController && !liveController.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await fetch("/v1/ops/live", { headers, signal: liveController.signal, cache: "no-store", credentials: "omit" });
      if (response.status === 401) {
        liveController = null;
        logout("Your key was not accepted: log in again.");
        return;
      }
      if (response.status === 501 || response.status === 404) {
        setLive("poll");
        pollTimer = setInterval(() => { if (!dialog.open && LIVE_PAGES.includes(route().page)) refresh(); }, POLL_MS);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setLive("stream");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) lastId = line.slice(4);
            else if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (type === "order" && data) onEvent(JSON.parse(data));
        }
      }
    } catch (e) {
      if (liveController && liveController.signal.aborted) return;
      console.info("live stream interrupted; reconnecting", e.message);
    }
    setLive("off");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  criteria = {};
  pages = [];
  if (liveController) liveController.abort();
  liveController = null;
  clearInterval(pollTimer);
  location.hash = "#/login";
  refresh().then(() => message && say(message, true));
}

document.getElementById("logout").addEventListener("click", () => logout("Logged out."));
window.addEventListener("hashchange", () => {
  say("");
  refresh().then(() => main.focus());
});
refresh();
if (key()) startLive();
