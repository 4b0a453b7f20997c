"""Drives Debian's headless Chromium over the DevTools protocol (websockets) through Rivulet's
dashboard and prints what it saw as JSON: console errors and uncaught exceptions, the jobs listed,
the operators drawn in the selected job's graph, and the jobs table's rates a few seconds apart.
Saves a screenshot.

Usage: dashboard.py URL SCREENSHOT_PNG
"""
import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import websockets

EVAL_STATE = """(() => {
  const cells = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
  return {
    jobs: [...document.querySelectorAll('#jobs tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent)),
    operators: cells('#graph text[data-operator]'),
    stages: document.querySelectorAll('#graph rect').length,
    edges: document.querySelectorAll('#graph path.hash, #graph path.forward').length,
    operator_rows: cells('#operators tbody tr td:nth-child(2)'),
    epochs: document.querySelectorAll('#epochs tbody tr').length,
    status: document.getElementById('status').textContent,
  };
})()"""


class Page:
    def __init__(self, ws, session):
        self.ws, self.session, self.next_id = ws, session, 0
        self.errors, self.pending = [], {}

    async def call(self, method, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, 20)

    async def pump(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self.pending:
                fut = self.pending.pop(msg["id"])
                if "error" in msg:
                    fut.set_exception(RuntimeError(str(msg["error"])))
                else:
                    fut.set_result(msg.get("result", {}))
                continue
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                self.errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                self.errors.append(params["entry"].get("text", ""))

    async def eval(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")


async def run(url, screenshot):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not installed")
    profile = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1400,1000",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = None
        for line in proc.stderr:
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                endpoint = m.group(1)
                break
        if not endpoint:
            raise SystemExit("chromium printed no DevTools endpoint")
        async with websockets.connect(endpoint, max_size=None) as ws:
            browser = Page(ws, None)
            pump = asyncio.create_task(browser.pump())
            target = await browser.call("Target.createTarget", url="about:blank")
            attached = await browser.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
            page = Page(ws, attached["sessionId"])
            # One reader for the socket: the page's calls resolve through the browser's pump.
            page.pending = browser.pending
            page.errors = browser.errors
            page.next_id = 1000
            for domain in ("Runtime", "Log", "Page"):
                await page.call(f"{domain}.enable")
            await page.call("Page.navigate", url=url)
            first = None
            for _ in range(100):
                await asyncio.sleep(0.2)
                state = await page.eval(EVAL_STATE)
                if state and state["jobs"] and state["operators"]:
                    first = state
                    break
            await asyncio.sleep(3)
            second = await page.eval(EVAL_STATE)
            shot = await page.call("Page.captureScreenshot", format="png")
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            pump.cancel()
            print(json.dumps({"errors": browser.errors, "first": first, "second": second}))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
