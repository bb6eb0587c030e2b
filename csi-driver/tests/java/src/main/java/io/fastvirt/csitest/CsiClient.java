package io.fastvirt.csitest;

import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import csi.v1.Csi;
import io.grpc.CallOptions;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.stub.ClientCalls;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Calls every CSI service of a fastvirt-csi socket with grpc-java (Netty, epoll unix sockets),
 * the channel built the standard way from a {@code unix://} target with the authority left to
 * grpc-java. Prints one JSON document on stdout; exits 1 when a call ends with a status it
 * should not.
 *
 * <p>usage: CsiClient SOCKET [POOL]
 */
public final class CsiClient {
  private static final long MIB = 1L << 20;
  private static final long TIMEOUT_SECONDS = 30;

  private final ManagedChannel channel;
  private final String pool;
  private final List<String> calls = new ArrayList<>();
  private final List<String> unexpected = new ArrayList<>();

  private CsiClient(ManagedChannel channel, String pool) {
    this.channel = channel;
    this.pool = pool;
  }

  private static <Q extends Message, R extends Message> MethodDescriptor<Q, R> method(
      String service, String name, Q request, R response) {
    return MethodDescriptor.<Q, R>newBuilder()
        .setType(MethodDescriptor.MethodType.UNARY)
        .setFullMethodName(MethodDescriptor.generateFullMethodName("csi.v1." + service, name))
        .setRequestMarshaller(ProtoUtils.marshaller(request))
        .setResponseMarshaller(ProtoUtils.marshaller(response))
        .build();
  }

  /** Calls {@code name}, records the outcome, returns the response or null. */
  private <Q extends Message, R extends Message> R call(
      String label, String service, String name, Q request, R responseType, Status.Code expect) {
    MethodDescriptor<Q, R> method = method(service, name, request, responseType);
    StringBuilder record = new StringBuilder();
    record.append("{\"call\":").append(quote(label));
    record.append(",\"expected\":").append(quote(expect.name()));
    R response = null;
    Status.Code code;
    try {
      response =
          ClientCalls.blockingUnaryCall(
              channel,
              method,
              CallOptions.DEFAULT.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS),
              request);
      code = Status.Code.OK;
      record.append(",\"code\":\"OK\",\"response\":");
      try {
        record.append(JsonFormat.printer().omittingInsignificantWhitespace().print(response));
      } catch (com.google.protobuf.InvalidProtocolBufferException e) {
        record.append(quote(e.toString()));
      }
    } catch (StatusRuntimeException e) {
      code = e.getStatus().getCode();
      record.append(",\"code\":").append(quote(code.name()));
      record.append(",\"details\":").append(quote(String.valueOf(e.getStatus().getDescription())));
      if (code != expect) {
        unexpected.add(label + ": " + code + " (expected " + expect + "): " + e.getStatus());
      }
    }
    if (code == Status.Code.OK && expect != Status.Code.OK) {
      unexpected.add(label + ": OK (expected " + expect + ")");
    }
    record.append('}');
    calls.add(record.toString());
    return response;
  }

  private <Q extends Message, R extends Message> R call(
      String label, String service, String name, Q request, R responseType) {
    return call(label, service, name, request, responseType, Status.Code.OK);
  }

  private static Csi.VolumeCapability block() {
    return Csi.VolumeCapability.newBuilder()
        .setBlock(Csi.VolumeCapability.BlockVolume.getDefaultInstance())
        .setAccessMode(
            Csi.VolumeCapability.AccessMode.newBuilder()
                .setMode(Csi.VolumeCapability.AccessMode.Mode.SINGLE_NODE_WRITER))
        .build();
  }

  private static Csi.VolumeCapability mount(String fsType) {
    return Csi.VolumeCapability.newBuilder()
        .setMount(Csi.VolumeCapability.MountVolume.newBuilder().setFsType(fsType))
        .setAccessMode(
            Csi.VolumeCapability.AccessMode.newBuilder()
                .setMode(Csi.VolumeCapability.AccessMode.Mode.SINGLE_NODE_WRITER))
        .build();
  }

  private Csi.CreateVolumeRequest.Builder createRequest(Csi.VolumeCapability capability) {
    return Csi.CreateVolumeRequest.newBuilder()
        .setCapacityRange(Csi.CapacityRange.newBuilder().setRequiredBytes(16 * MIB))
        .addVolumeCapabilities(capability)
        .putParameters("pool", pool)
        .putParameters("thin", "true");
  }

  private void run() {
    call("Identity.GetPluginInfo", "Identity", "GetPluginInfo",
        Csi.GetPluginInfoRequest.getDefaultInstance(), Csi.GetPluginInfoResponse.getDefaultInstance());
    call("Identity.GetPluginCapabilities", "Identity", "GetPluginCapabilities",
        Csi.GetPluginCapabilitiesRequest.getDefaultInstance(),
        Csi.GetPluginCapabilitiesResponse.getDefaultInstance());
    call("Identity.Probe", "Identity", "Probe",
        Csi.ProbeRequest.getDefaultInstance(), Csi.ProbeResponse.getDefaultInstance());
    Csi.ControllerGetCapabilitiesResponse caps =
        call("Controller.ControllerGetCapabilities", "Controller", "ControllerGetCapabilities",
            Csi.ControllerGetCapabilitiesRequest.getDefaultInstance(),
            Csi.ControllerGetCapabilitiesResponse.getDefaultInstance());
    boolean snapshots =
        caps != null
            && caps.getCapabilitiesList().stream()
                .anyMatch(c -> c.getRpc().getType()
                    == Csi.ControllerServiceCapability.RPC.Type.CREATE_DELETE_SNAPSHOT);

    Csi.CreateVolumeResponse blockVolume =
        call("Controller.CreateVolume[block]", "Controller", "CreateVolume",
            createRequest(block()).setName("javaclient-block").build(),
            Csi.CreateVolumeResponse.getDefaultInstance());
    Csi.CreateVolumeResponse fsVolume =
        call("Controller.CreateVolume[filesystem]", "Controller", "CreateVolume",
            createRequest(mount("ext4")).setName("javaclient-filesystem").build(),
            Csi.CreateVolumeResponse.getDefaultInstance());
    call("Controller.ListVolumes", "Controller", "ListVolumes",
        Csi.ListVolumesRequest.getDefaultInstance(), Csi.ListVolumesResponse.getDefaultInstance());
    call("Controller.GetCapacity", "Controller", "GetCapacity",
        Csi.GetCapacityRequest.newBuilder()
            .addVolumeCapabilities(block())
            .putParameters("pool", pool)
            .build(),
        Csi.GetCapacityResponse.getDefaultInstance());
    if (snapshots && blockVolume != null) {
      Csi.CreateSnapshotResponse snapshot =
          call("Controller.CreateSnapshot", "Controller", "CreateSnapshot",
              Csi.CreateSnapshotRequest.newBuilder()
                  .setSourceVolumeId(blockVolume.getVolume().getVolumeId())
                  .setName("javaclient-snap")
                  .build(),
              Csi.CreateSnapshotResponse.getDefaultInstance());
      if (snapshot != null) {
        call("Controller.DeleteSnapshot", "Controller", "DeleteSnapshot",
            Csi.DeleteSnapshotRequest.newBuilder()
                .setSnapshotId(snapshot.getSnapshot().getSnapshotId())
                .build(),
            Csi.DeleteSnapshotResponse.getDefaultInstance());
      }
    }
    for (Object[] volume :
        new Object[][] {{"block", blockVolume}, {"filesystem", fsVolume}}) {
      if (volume[1] != null) {
        call("Controller.DeleteVolume[" + volume[0] + "]", "Controller", "DeleteVolume",
            Csi.DeleteVolumeRequest.newBuilder()
                .setVolumeId(((Csi.CreateVolumeResponse) volume[1]).getVolume().getVolumeId())
                .build(),
            Csi.DeleteVolumeResponse.getDefaultInstance());
      }
    }
    call("Node.NodeGetInfo", "Node", "NodeGetInfo",
        Csi.NodeGetInfoRequest.getDefaultInstance(), Csi.NodeGetInfoResponse.getDefaultInstance());
    call("Node.NodeGetCapabilities", "Node", "NodeGetCapabilities",
        Csi.NodeGetCapabilitiesRequest.getDefaultInstance(),
        Csi.NodeGetCapabilitiesResponse.getDefaultInstance());
    // A request the driver must refuse by its content: CreateVolume without a name.
    call("Controller.CreateVolume[no name]", "Controller", "CreateVolume",
        createRequest(block()).build(), Csi.CreateVolumeResponse.getDefaultInstance(),
        Status.Code.INVALID_ARGUMENT);
  }

  private static String quote(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }

  public static void main(String[] args) throws InterruptedException {
    if (args.length < 1) {
      System.err.println("usage: CsiClient SOCKET [POOL]");
      System.exit(2);
    }
    String target = "unix://" + args[0];
    String pool = args.length > 1 ? args[1] : "default";
    ManagedChannel channel =
        Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
    CsiClient client = new CsiClient(channel, pool);
    try {
      client.run();
    } finally {
      channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
    }
    StringBuilder unexpected = new StringBuilder("[");
    for (int i = 0; i < client.unexpected.size(); i++) {
      unexpected.append(i == 0 ? "" : ",").append(quote(client.unexpected.get(i)));
    }
    unexpected.append(']');
    System.out.println(
        "{\"grpc_java\":" + quote(Grpc.class.getPackage().getImplementationVersion() == null
                ? "unknown" : Grpc.class.getPackage().getImplementationVersion())
            + ",\"java\":" + quote(System.getProperty("java.version"))
            + ",\"target\":" + quote(target)
            + ",\"authority\":" + quote(channel.authority())
            + ",\"calls\":[" + String.join(",", client.calls) + "]"
            + ",\"unexpected\":" + unexpected
            + ",\"ok\":" + client.unexpected.isEmpty() + "}");
    for (String line : client.unexpected) {
      System.err.println("unexpected: " + line);
    }
    System.exit(client.unexpected.isEmpty() ? 0 : 1);
  }
}
