-- wrk script: one KServe v2 request to the echo model (the gateway's own overhead).
wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["hello world this is a sentence"]}]}'
wrk.headers["Content-Type"] = "application/json"
