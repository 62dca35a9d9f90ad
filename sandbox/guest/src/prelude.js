// The script's world: `db`, `console`, `setTimeout`/`clearTimeout`, the mongosh value helpers,
// and the hooks the Rust side of the guest calls (`__quorum_tick`, `__quorum_describe`,
// `__quorum_encode`, `__quorum_expr`). Evaluated once, before the script; evaluates to a
// function that takes the engine and installs the globals.
(function () {
  'use strict';
  const g = globalThis;
  const call = g.__quorum_call;
  const log = g.__quorum_log;
  const sleep = g.__quorum_sleep;
  delete g.__quorum_call;
  delete g.__quorum_log;
  delete g.__quorum_sleep;

  const hidden = (obj, name, value) =>
    Object.defineProperty(obj, name, { value, writable: false, enumerable: false, configurable: false });

  // ---- values -------------------------------------------------------------------------------
  class ObjectId {
    constructor(hex) {
      if (hex === undefined) throw new TypeError('ObjectId() needs a 24-character hex string here');
      if (typeof hex !== 'string' || !/^[0-9a-fA-F]{24}$/.test(hex)) {
        throw new TypeError(`ObjectId: expected a 24-character hex string, got ${JSON.stringify(hex)}`);
      }
      hidden(this, '$oid', hex.toLowerCase());
    }
    toHexString() { return this.$oid; }
    toString() { return this.$oid; }
    equals(other) { return other instanceof ObjectId && other.$oid === this.$oid; }
    toJSON() { return { $oid: this.$oid }; }
  }
  class Long {
    constructor(v) {
      const s = String(v);
      if (!/^-?\d+$/.test(s)) throw new TypeError(`Long: expected an integer, got ${JSON.stringify(v)}`);
      hidden(this, 'value', s);
    }
    valueOf() { return Number(this.value); }
    toString() { return this.value; }
    toNumber() { return Number(this.value); }
    toBigInt() { return BigInt(this.value); }
    toJSON() { return { $numberLong: this.value }; }
  }
  class Decimal128 {
    constructor(v) {
      const s = String(v);
      if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(Infinity|NaN)$/.test(s)) {
        throw new TypeError(`Decimal128: not a decimal number: ${JSON.stringify(v)}`);
      }
      hidden(this, 'value', s);
    }
    valueOf() { return Number(this.value); }
    toString() { return this.value; }
    toJSON() { return { $numberDecimal: this.value }; }
  }
  class Binary {
    constructor(base64, subType) {
      if (typeof base64 !== 'string') throw new TypeError('Binary: expected base64 text');
      hidden(this, 'base64', base64);
      hidden(this, 'subType', subType === undefined ? '00' : String(subType));
    }
    toString() { return this.base64; }
    toJSON() { return { $binary: { base64: this.base64, subType: this.subType } }; }
  }
  const ISODate = (s) => {
    const d = s === undefined ? new Date() : new Date(s);
    if (Number.isNaN(d.getTime())) throw new TypeError(`ISODate: not a date: ${JSON.stringify(s)}`);
    return d;
  };

  // Script value -> canonical Extended JSON (what crosses to the portal).
  function toEjson(v, depth) {
    if (depth > 200) throw new RangeError('value nested too deeply');
    if (v === null || v === undefined) return null;
    if (typeof v === 'number') {
      if (Number.isInteger(v) && Math.abs(v) <= 2147483647) return { $numberInt: String(v) };
      if (Number.isInteger(v) && Number.isSafeInteger(v)) return { $numberLong: String(v) };
      return { $numberDouble: Number.isFinite(v) ? String(v) : (Number.isNaN(v) ? 'NaN' : (v > 0 ? 'Infinity' : '-Infinity')) };
    }
    if (typeof v === 'bigint') return { $numberLong: v.toString() };
    if (typeof v === 'string' || typeof v === 'boolean') return v;
    if (v instanceof Date) return { $date: { $numberLong: String(v.getTime()) } };
    if (v instanceof ObjectId || v instanceof Long || v instanceof Decimal128 || v instanceof Binary) return v.toJSON();
    if (v instanceof RegExp) return { $regularExpression: { pattern: v.source, options: v.flags.replace(/[^imsx]/g, '') } };
    if (Array.isArray(v)) return v.map((x) => toEjson(x, depth + 1));
    if (typeof v === 'object') {
      const out = {};
      for (const k of Object.keys(v)) {
        if (v[k] !== undefined) out[k] = toEjson(v[k], depth + 1);
      }
      return out;
    }
    throw new TypeError(`cannot send a ${typeof v} to the database`);
  }

  // Canonical Extended JSON from the portal -> script values.
  function fromEjson(v) {
    if (v === null || typeof v !== 'object') return v;
    if (Array.isArray(v)) return v.map(fromEjson);
    const keys = Object.keys(v);
    if (keys.length === 1 || (keys.length === 2 && '$binary' in v)) {
      const k = keys[0];
      const x = v[k];
      switch (k) {
        case '$oid': return new ObjectId(x);
        case '$numberInt': return Number(x);
        case '$numberDouble': return Number(x);
        case '$numberLong': return new Long(x);
        case '$numberDecimal': return new Decimal128(x);
        case '$date':
          return new Date(typeof x === 'object' && x !== null ? Number(x.$numberLong) : x);
        case '$binary': return new Binary(x.base64, x.subType);
        case '$regularExpression': return new RegExp(x.pattern, x.options);
        default: break;
      }
    }
    const out = {};
    for (const k of keys) out[k] = fromEjson(v[k]);
    return out;
  }

  // ---- console ------------------------------------------------------------------------------
  const show = (v) => {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return `${v.name}: ${v.message}`;
    try {
      const s = JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? `${x}n` : x));
      return s === undefined ? String(v) : s;
    } catch (e) {
      return String(v);
    }
  };
  const level = (n) => (...args) => { log(n, args.map(show).join(' ')); };
  const console = Object.freeze({ log: level(0), debug: level(0), info: level(1), warn: level(2), error: level(3) });

  // ---- timers -------------------------------------------------------------------------------
  const timers = new Map();
  let timerSeq = 0;
  function setTimeout(fn, ms, ...args) {
    if (typeof fn !== 'function') throw new TypeError('setTimeout: the first argument must be a function');
    const id = ++timerSeq;
    timers.set(id, { due: Date.now() + Math.max(0, Number(ms) || 0), fn, args });
    return id;
  }
  function clearTimeout(id) { timers.delete(id); }

  // ---- the database handle ------------------------------------------------------------------
  class DatabaseError extends Error {
    constructor(e) {
      super(e.message);
      this.name = 'DatabaseError';
      this.kind = e.kind;
      if (e.code !== undefined) this.code = e.code;
    }
  }
  // A large result comes in batches of rows, which `call` decodes while the portal reads the
  // next ones and puts in `out.rows`; then the reply itself, with `rows: []` when batches came
  // first.
  function invoke(op) {
    const out = Object.create(null);
    const reply = JSON.parse(call(JSON.stringify(op), out));
    if (reply.error) throw new DatabaseError(reply.error);
    if (out.rows !== undefined) reply.ok.rows = out.rows;
    return reply.ok;
  }

  function sqlParam(v) {
    if (v === undefined || v === null) return null;
    if (v instanceof Date) return v.toISOString();
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'object') return JSON.stringify(v);
    return v;
  }
  function sqlDb() {
    return Object.freeze({
      async query(sql, params) {
        if (typeof sql !== 'string') throw new TypeError('db.query(sql, params): sql must be a string');
        if (params !== undefined && params !== null && !Array.isArray(params)) {
          throw new TypeError('db.query(sql, params): params must be an array');
        }
        return invoke({ op: 'query', sql, params: (params || []).map(sqlParam) });
      },
    });
  }

  function mongoDb() {
    const mongo = (collection, method, args) =>
      fromEjson(invoke({ op: 'mongo', collection, method, args: args.map((a) => toEjson(a, 0)) }));
    class Cursor {
      constructor(collection, method, first, options) {
        hidden(this, 'collection', collection);
        hidden(this, 'method', method);
        hidden(this, 'first', first);
        hidden(this, 'options', Object.assign({}, options || {}));
      }
      sort(s) { this.options.sort = s; return this; }
      limit(n) { this.options.limit = n; return this; }
      skip(n) { this.options.skip = n; return this; }
      project(p) { this.options.projection = p; return this; }
      projection(p) { return this.project(p); }
      batchSize() { return this; }
      async toArray() { return mongo(this.collection, this.method, [this.first, this.options]); }
      async forEach(fn) { for (const d of await this.toArray()) await fn(d); }
      async map(fn) { return (await this.toArray()).map(fn); }
      async count() {
        return mongo(this.collection, 'countDocuments', [this.first || {}, {}]);
      }
    }
    const checkName = (name) => {
      if (typeof name !== 'string' || name.length === 0) throw new TypeError('db.collection(name): name must be a non-empty string');
      return name;
    };
    function collection(name) {
      checkName(name);
      const m = (method) => async (...args) => mongo(name, method, args);
      return Object.freeze({
        collectionName: name,
        find: (filter, options) => new Cursor(name, 'find', filter || {}, options),
        aggregate: (pipeline, options) => {
          if (!Array.isArray(pipeline)) throw new TypeError('aggregate(pipeline): pipeline must be an array of stages');
          return new Cursor(name, 'aggregate', pipeline, options);
        },
        findOne: m('findOne'),
        countDocuments: m('countDocuments'),
        estimatedDocumentCount: m('estimatedDocumentCount'),
        distinct: m('distinct'),
        insertOne: m('insertOne'),
        insertMany: m('insertMany'),
        updateOne: m('updateOne'),
        updateMany: m('updateMany'),
        replaceOne: m('replaceOne'),
        deleteOne: m('deleteOne'),
        deleteMany: m('deleteMany'),
      });
    }
    const base = Object.freeze({ collection, getCollection: collection });
    return new Proxy(base, {
      get(target, prop) {
        if (prop in target) return target[prop];
        // `then` must stay undefined, or `await db` would treat the handle as a promise.
        if (typeof prop !== 'string' || prop === 'then' || prop === 'toJSON') return undefined;
        return collection(prop);
      },
      set() { return false; },
      defineProperty() { return false; },
      deleteProperty() { return false; },
    });
  }

  // ---- hooks for the Rust side --------------------------------------------------------------
  hidden(g, '__quorum_tick', () => {
    if (timers.size === 0) return false;
    let nextId = 0;
    let next = null;
    for (const [id, t] of timers) {
      if (next === null || t.due < next.due) { next = t; nextId = id; }
    }
    timers.delete(nextId);
    const wait = next.due - Date.now();
    if (wait > 0) sleep(wait);
    next.fn(...next.args);
    return true;
  });

  hidden(g, '__quorum_describe', (e, prefixLength) => {
    let kind = 'script';
    let message;
    let line;
    let column;
    if (e instanceof Error) {
      message = `${e.name}: ${e.message}`;
      if (e instanceof SyntaxError) kind = 'syntax';
      else if (e instanceof DatabaseError) kind = e.kind || 'db_error';
      else if (/stack overflow|call stack/i.test(e.message)) kind = 'stack_overflow';
      else if (/out of memory/i.test(e.message)) kind = 'memory_limit';
      const at = /script\.js:(\d+)(?::(\d+))?/.exec(String(e.stack || ''));
      if (at) {
        line = Number(at[1]);
        if (at[2] !== undefined) column = Number(at[2]);
      } else if (typeof e.lineNumber === 'number') {
        line = e.lineNumber;
        if (typeof e.columnNumber === 'number') column = e.columnNumber;
      }
    } else {
      message = `Uncaught ${show(e)}`;
    }
    if (line === 1 && column !== undefined) column = Math.max(1, column - prefixLength);
    return JSON.stringify({ error: { kind, message, line, column } });
  });

  hidden(g, '__quorum_encode', (value) =>
    JSON.stringify({ value: value === undefined ? null : value }, (k, x) => (typeof x === 'bigint' ? x.toString() : x)));

  return function (engine) {
    const db = engine === 'mongodb' ? mongoDb() : sqlDb();
    hidden(g, '__quorum_expr', async (v) => (v instanceof Object && typeof v.toArray === 'function' ? v.toArray() : v));
    hidden(g, 'db', db);
    hidden(g, 'console', console);
    hidden(g, 'setTimeout', setTimeout);
    hidden(g, 'clearTimeout', clearTimeout);
    if (engine === 'mongodb') {
      // Plain functions, so both `ObjectId('…')` and `new ObjectId('…')` work as in mongosh,
      // sharing the class's prototype so that `value instanceof ObjectId` holds.
      const callable = (C) => {
        const f = function (v) { return new C(v); };
        f.prototype = C.prototype;
        return Object.freeze(f);
      };
      hidden(g, 'ObjectId', callable(ObjectId));
      hidden(g, 'ISODate', ISODate);
      hidden(g, 'NumberLong', callable(Long));
      hidden(g, 'Long', callable(Long));
      hidden(g, 'NumberDecimal', callable(Decimal128));
      hidden(g, 'Decimal128', callable(Decimal128));
      hidden(g, 'BinData', (subType, base64) => new Binary(base64, subType.toString(16).padStart(2, '0')));
    }
  };
})()
