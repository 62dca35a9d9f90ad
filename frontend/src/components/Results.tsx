// The stored rows of an execution: typed columns, a sticky header, pages of 100 rows fetched
// on demand (so 10 000 rows stay fast), and CSV / JSON downloads. Values are text, always.
import { useState } from "react";
import { download, type RowsPage } from "../api/client";
import { useApi } from "../data";
import { Empty, ErrorNote, Loading } from "./ui";

const PAGE = 100;

function cell(v: unknown): { text: string; isNull: boolean } {
  if (v === null || v === undefined) return { text: "NULL", isNull: true };
  if (typeof v === "string") return { text: v, isNull: false };
  return { text: JSON.stringify(v), isNull: false };
}

export function Results({ execution }: { execution: string }) {
  const [offset, setOffset] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const { data, error: loadError } = useApi<RowsPage>(`/api/v1/executions/${execution}/rows?offset=${offset}&limit=${PAGE}`);
  const save = (kind: "csv" | "json") =>
    download(`/api/v1/executions/${execution}/result.${kind}`, `result-${execution}.${kind}`).catch(setError);

  if (loadError) {
    // A run without rows has no result to show.
    return <ErrorNote error={loadError} />;
  }
  if (!data) return <Loading what="rows" />;
  return (
    <section aria-label="Result">
      <div className="row">
        <span className="muted">
          {data.total} {data.total === 1 ? "row" : "rows"}
          {data.truncated ? " (more rows were returned than the limit keeps)" : ""}
        </span>
        <button type="button" className="secondary" onClick={() => void save("csv")}>Download CSV</button>
        <button type="button" className="secondary" onClick={() => void save("json")}>Download JSON</button>
      </div>
      <ErrorNote error={error} />
      {data.total === 0 ? (
        <Empty>The statement returned no rows.</Empty>
      ) : (
        <div className="table-wrap results">
          <table>
            <thead>
              <tr>
                <th scope="col" className="rownum">#</th>
                {data.columns.map((c, i) => (
                  <th scope="col" key={i}>
                    {c.name}
                    <span className="type">{c.type}</span>
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {data.rows.map((row, r) => (
                <tr key={offset + r}>
                  <td className="rownum">{offset + r + 1}</td>
                  {(row as unknown[]).map((v, i) => {
                    const c = cell(v);
                    return (
                      <td key={i} className={c.isNull ? "null" : undefined}>
                        {c.text}
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {data.total > PAGE && (
        <nav className="pager" aria-label="Result pages">
          <button type="button" className="secondary" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>Previous</button>
          <span>Rows {offset + 1}–{Math.min(offset + PAGE, data.total)} of {data.total}</span>
          <button type="button" className="secondary" disabled={offset + PAGE >= data.total} onClick={() => setOffset(offset + PAGE)}>Next</button>
        </nav>
      )}
    </section>
  );
}
