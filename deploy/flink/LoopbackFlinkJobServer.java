// Beam's Flink job server with its job and artifact ports bound to 127.0.0.1.
//
// FlinkJobServerDriver builds those two gRPC servers with Beam's ServerFactory, which
// calls NettyServerBuilder.forPort(port): every interface, whatever --job-host says (it
// only names the advertised address). This launcher parses the same arguments and runs
// the same driver (JobServerDriver with FlinkJobInvoker, as FlinkJobServerDriver.main
// does) with a ServerFactory that binds the loopback address. install.sh compiles it
// against the job server's class path; start.sh runs it instead of FlinkJobServerDriver.
// Written against Beam 2.62.0 (vendored gRPC 1.60.1): another Beam version may need the
// vendored package names below changed.

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.runners.flink.FlinkJobInvoker;
import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.flink.FlinkJobServerDriver.FlinkServerConfiguration;
import org.apache.beam.runners.jobsubmission.JobServerDriver;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.sdk.io.FileSystems;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

public class LoopbackFlinkJobServer extends JobServerDriver {

  /** Beam's InetSocketAddressServerFactory, but on 127.0.0.1 instead of every interface. */
  static class LoopbackServerFactory extends ServerFactory {
    private final int port;

    LoopbackServerFactory(int port) {
      this.port = port;
    }

    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, ApiServiceDescriptor.Builder descriptor)
        throws IOException {
      InetAddress loopback = InetAddress.getLoopbackAddress();
      Server server = create(services, new InetSocketAddress(loopback, port));
      descriptor.setUrl(loopback.getHostAddress() + ":" + server.getPort());
      return server;
    }

    @Override
    public Server create(List<BindableService> services, ApiServiceDescriptor descriptor)
        throws IOException {
      String url = descriptor.getUrl();
      int colon = url.lastIndexOf(':');
      return create(
          services,
          new InetSocketAddress(InetAddress.getLoopbackAddress(), Integer.parseInt(url.substring(colon + 1))));
    }

    private static Server create(List<BindableService> services, InetSocketAddress address)
        throws IOException {
      // The same settings as Beam's ServerFactory.createServer, bound to one address.
      NettyServerBuilder builder =
          NettyServerBuilder.forAddress(address)
              .maxInboundMessageSize(Integer.MAX_VALUE)
              .permitKeepAliveTime(1, TimeUnit.SECONDS);
      for (BindableService service : services) {
        builder.addService(
            ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
      }
      return builder.build().start();
    }
  }

  private LoopbackFlinkJobServer(FlinkServerConfiguration configuration) {
    super(
        configuration,
        new LoopbackServerFactory(configuration.getPort()),
        new LoopbackServerFactory(configuration.getArtifactPort()),
        () -> FlinkJobInvoker.create(configuration));
  }

  public static void main(String[] args) throws Exception {
    // As FlinkJobServerDriver.main: default file system options for the artifact service.
    FileSystems.setDefaultPipelineOptions(PipelineOptionsFactory.create());
    new LoopbackFlinkJobServer(FlinkJobServerDriver.parseArgs(args)).run();
  }
}
