import { describe, expect, it } from "vitest";
import { match } from "./router";

describe("match", () => {
  it("extracts parameters and refuses other shapes", () => {
    expect(match("/requests/:id", "/requests/0190f5a4")).toEqual({ id: "0190f5a4" });
    expect(match("/requests/:id", "/requests/0190f5a4/")).toEqual({ id: "0190f5a4" });
    expect(match("/requests/:id", "/requests")).toBeNull();
    expect(match("/inbox", "/requests/x")).toBeNull();
  });
});
