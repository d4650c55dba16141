// Proxy mode: rill in front of an app's own AI SDK route (app-route.mjs: `streamText` with the
// `ai` package's mock model, `toUIMessageStreamResponse()`). Through rill, `useChat`'s machinery
// (majors 6 and 7) gets exactly the parts the route makes (reasoning, text, a tool call with its
// output, text), rill stores them, the route gets the history as UI messages and the user's
// identity signed, and stop closes the route's request. Also: one user cannot reach another's
// chat through this face.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { signedHeaders, startAppRoute } from "./app-route.mjs";
import { MAJORS, api, loadAi, makeChat, mintToken, plain, startRill, storedUiMessages, until } from "./lib.mjs";

const JWT_SECRET = "ai-sdk-proxy-test-secret-0123456789abcdef";
const APP_SECRET = "the secret rill and the app share";

let app;
let rill;
let alice;
let bob;

before(async () => {
  app = await startAppRoute({ secret: APP_SECRET });
  const bot = (id, route, secretEnv = "RILL_TEST_APP_SECRET") => `
[[bots]]
id = "${id}"
name = "${id}"
provider = "ai_sdk"
base_url = "${app.url}${route}"
api_key_env = "${secretEnv}"
model = "app-model"
`;
  const config = `
[[bots]]
id = "demo"
name = "Demo"
provider = "demo"
model = "demo"
${bot("app6", "/v6/api/chat")}
${bot("app7", "/v7/api/chat")}
${bot("app-slow", "/v7/api/chat?mode=slow")}
${bot("app-wrong-secret", "/v7/api/chat", "RILL_TEST_WRONG_SECRET")}
`;
  rill = await startRill({
    config,
    args: ["--auth", "jwt"],
    env: {
      RILL_JWT_SECRET: JWT_SECRET,
      RILL_TEST_APP_SECRET: APP_SECRET,
      RILL_TEST_WRONG_SECRET: "not the secret the app knows",
    },
  });
  [alice, bob] = await Promise.all(["alice", "bob"].map((sub) => mintToken({ secret: JWT_SECRET, sub })));
});

after(async () => {
  await rill?.stop();
  await app?.stop();
});

let chats = 0;
const newChatId = () => `proxy-${process.pid}-${++chats}`;
const auth = (token) => ({ authorization: `Bearer ${token}` });
/** Parts as the client holds them, but for the ids each server makes up for reasoning. */
const comparable = (parts) => parts.map(({ id, ...rest }) => (rest.type === "reasoning" ? rest : { id, ...rest }));
const requestsFor = (chatId) => app.requests.filter((r) => r.body.id === chatId);

for (const major of MAJORS) {
  describe(`ai@${major} through rill to the app's route`, () => {
    let ai;
    before(async () => {
      ai = await loadAi(major);
    });

    test("the client gets exactly the route's parts; rill stores them; the route gets history and identity", async () => {
      // The route itself, as useChat would talk to it without rill.
      const direct = makeChat(ai, {
        id: `direct-${newChatId()}`, api: `${app.url}/v${major}/api/chat`, headers: signedHeaders(APP_SECRET, "direct"),
      });
      await direct.chat.sendMessage({ text: "Weather in Paris?" });
      assert.deepEqual(direct.errors, []);
      const expected = plain(direct.chat.messages[1]).parts;
      assert.deepEqual(expected.map((p) => p.type), ["step-start", "reasoning", "text", "tool-weather", "step-start", "text"]);

      const id = newChatId();
      const { chat, errors, finishes } = makeChat(ai, {
        id, api: `${rill.base}/api/ai-sdk/chat`, headers: auth(alice), body: { bot: `app${major}` },
      });
      await chat.sendMessage({ text: "Weather in Paris?" });
      assert.deepEqual(errors, []);
      const answer = plain(chat.messages[1]);
      assert.deepEqual(comparable(answer.parts), comparable(expected));
      assert.equal(finishes[0].finishReason, "stop");

      const stored = await storedUiMessages(rill.base, id, auth(alice));
      assert.deepEqual(stored[1], answer);
      const native = await api(rill.base, "GET", `/api/chats/${id}/messages`, { headers: auth(alice) });
      const parts = native.json.messages[1].parts;
      assert.deepEqual(parts.map((p) => p.type), ["reasoning", "text", "tool_call", "text"]);
      assert.deepEqual(parts[2].output, { city: "Paris", forecast: "sunny", tempC: 21 });
      assert.equal(native.json.messages[1].content, "Let me check the weather.It is sunny in Paris.");

      // What the route got: the chat id, the history as UI messages, alice's signed identity.
      const [first] = requestsFor(id);
      assert.equal(first.user, "alice");
      assert.equal(first.body.trigger, "submit-message");
      assert.deepEqual(first.body.messages, [{ id: "m0", role: "user", parts: [{ type: "text", text: "Weather in Paris?" }] }]);
      assert.equal(first.body.rill.messageId, answer.id);

      // A second turn: the route turns the stored answer back into model messages.
      await chat.sendMessage({ text: "Thanks!" });
      assert.deepEqual(errors, []);
      const second = requestsFor(id)[1];
      assert.equal(second.body.messages.length, 3);
      assert.deepEqual(second.body.messages[1].parts, stored[1].parts);
      assert.deepEqual(plain(chat.messages[3]), (await storedUiMessages(rill.base, id, auth(alice)))[3]);
    });
  });
}

describe("proxy mode, once", () => {
  let ai;
  before(async () => {
    ai = await loadAi(7);
  });

  test("stop closes the route's request and keeps what came", async () => {
    const id = newChatId();
    const { chat, errors } = makeChat(ai, { id, api: `${rill.base}/api/ai-sdk/chat`, headers: auth(alice), body: { bot: "app-slow" } });
    const sending = chat.sendMessage({ text: "Weather in Paris?" });
    await until(() => chat.messages[1]?.parts.some((p) => p.type === "text" && p.text.length > 0), 15_000, "text");
    const stopped = await api(rill.base, "POST", `/api/ai-sdk/chat/${id}/stop`, { headers: auth(alice) });
    assert.equal(stopped.status, 200, stopped.text);
    await sending;
    assert.deepEqual(errors, []);
    assert.equal(stopped.json.message.metadata.status, "stopped");
    assert.deepEqual(plain(chat.messages[1]), stopped.json.message);
    await until(() => requestsFor(id)[0]?.wentAway, 5_000, "the route to see its request closed");
  });

  test("a route that refuses the signature: the client sees the error, rill stores it", async () => {
    const id = newChatId();
    const { chat, errors } = makeChat(ai, { id, api: `${rill.base}/api/ai-sdk/chat`, headers: auth(alice), body: { bot: "app-wrong-secret" } });
    await chat.sendMessage({ text: "Hi" });
    assert.equal(chat.status, "error");
    assert.match(errors[0].message, /rejected the request \(401/);
    assert.equal(requestsFor(id)[0].user, null);
    const native = await api(rill.base, "GET", `/api/chats/${id}/messages`, { headers: auth(alice) });
    assert.equal(native.json.messages[1].status, "error");
  });

  test("another user's chat id is neither reachable nor revealed", async () => {
    const id = newChatId();
    const mine = makeChat(ai, { id, api: `${rill.base}/api/ai-sdk/chat`, headers: auth(alice), body: { bot: "demo" } });
    await mine.chat.sendMessage({ text: "Mine" });
    assert.deepEqual(mine.errors, []);

    const theirs = makeChat(ai, { id, api: `${rill.base}/api/ai-sdk/chat`, headers: auth(bob), body: { bot: "demo" } });
    await theirs.chat.sendMessage({ text: "Let me in" });
    assert.equal(theirs.chat.status, "error");
    assert.match(theirs.errors[0].message, /chat_id_taken/);
    const transport = new ai.DefaultChatTransport({ api: `${rill.base}/api/ai-sdk/chat`, headers: auth(bob) });
    assert.equal(await transport.reconnectToStream({ chatId: id }), null);
    assert.deepEqual(await storedUiMessages(rill.base, id, auth(bob)), []);
    assert.equal((await api(rill.base, "POST", `/api/ai-sdk/chat/${id}/stop`, { headers: auth(bob) })).status, 404);
    assert.equal((await api(rill.base, "POST", `/api/ai-sdk/chat/${id}/stop`)).status, 401);
    // Alice's chat is untouched.
    assert.equal((await storedUiMessages(rill.base, id, auth(alice))).length, 2);
  });
});
