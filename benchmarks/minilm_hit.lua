-- wrk script: the same minilm request every time (with --cache, every request but the first is a hit).
wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["the same sentence asked again and again by many clients"]}]}'
wrk.headers["Content-Type"] = "application/json"
