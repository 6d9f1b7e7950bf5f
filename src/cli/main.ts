console.log("stratus: no commands yet");
