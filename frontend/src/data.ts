// Loading data for a page: the value, the error, and a way to load again.
import { useCallback, useEffect, useState } from "react";
import { api, type Schemas } from "./api/client";

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  reload: () => void;
}

export function useApi<T>(path: string | null): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!path) return;
    let live = true;
    api<T>("GET", path).then(
      (d) => {
        if (live) {
          setData(d);
          setError(null);
        }
      },
      (e: unknown) => {
        if (live) setError(e);
      },
    );
    return () => {
      live = false;
    };
  }, [path, tick]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  return { data, error, reload };
}

/** Names of the instances the caller may see, by id. */
export function useInstanceNames(): Map<string, string> {
  const { data } = useApi<Schemas["InstancePage"]>("/api/v1/instances?per_page=100");
  return new Map((data?.items ?? []).map((i) => [i.id, i.name]));
}
