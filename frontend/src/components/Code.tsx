// CodeMirror 6, as an editor (new request) or read-only viewer (request detail), with SQL or
// JavaScript highlighting, line numbers, and lines marked (syntax errors, the failing line).
import { useEffect, useRef } from "react";
import { EditorState, RangeSetBuilder, StateEffect, StateField } from "@codemirror/state";
import { Decoration, EditorView, lineNumbers, type DecorationSet } from "@codemirror/view";
import { defaultHighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { keymap } from "@codemirror/view";
import { sql } from "@codemirror/lang-sql";
import { javascript } from "@codemirror/lang-javascript";

export interface Mark {
  line: number;
  message: string;
}

const setMarks = StateEffect.define<Mark[]>();
const markLine = (m: Mark) => Decoration.line({ attributes: { class: "cm-marked", title: m.message } });

const marks = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(deco, tr) {
    for (const e of tr.effects) {
      if (e.is(setMarks)) {
        const b = new RangeSetBuilder<Decoration>();
        const lines = tr.state.doc.lines;
        [...e.value].sort((a, c) => a.line - c.line).forEach((m) => {
          if (m.line >= 1 && m.line <= lines) {
            const l = tr.state.doc.line(m.line);
            b.add(l.from, l.from, markLine(m));
          }
        });
        return b.finish();
      }
    }
    return deco.map(tr.changes);
  },
  provide: (f) => EditorView.decorations.from(f),
});

export function Code({
  value,
  language,
  onChange,
  marked = [],
  label,
}: {
  value: string;
  language: "sql" | "javascript";
  onChange?: (v: string) => void;
  marked?: Mark[];
  label: string;
}) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const change = useRef(onChange);
  useEffect(() => {
    change.current = onChange;
  }, [onChange]);

  useEffect(() => {
    if (!host.current) return;
    const v = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: value,
        extensions: [
          lineNumbers(),
          history(),
          keymap.of([...defaultKeymap, ...historyKeymap]),
          syntaxHighlighting(defaultHighlightStyle),
          language === "sql" ? sql() : javascript(),
          marks,
          EditorState.readOnly.of(!onChange),
          EditorView.editable.of(!!onChange),
          EditorView.contentAttributes.of({ "aria-label": label }),
          EditorView.updateListener.of((u) => {
            if (u.docChanged) change.current?.(u.state.doc.toString());
          }),
        ],
      }),
    });
    view.current = v;
    return () => v.destroy();
    // The editor is created once per language; value changes flow in below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [language]);

  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== value) {
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: value } });
    }
  }, [value]);

  useEffect(() => {
    view.current?.dispatch({ effects: setMarks.of(marked) });
  }, [marked]);

  return <div className="code" ref={host} />;
}
